"""tikvlab: stand-ins for pd-server and tikv-server that behave as TiKV and PD do with TLS."""
