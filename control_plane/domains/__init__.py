"""Custom domains of instances: claims, their verification (DNS TXT or an HTTP token), and
what the proxy and the TLS `ask` endpoint need to know of them."""
