"""The xDS server (ADS) from which proxyless gRPC clients balance: no hop per call."""
