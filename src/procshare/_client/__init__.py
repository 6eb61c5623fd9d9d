"""The procshare client: the connection (channel) and the proxies."""
