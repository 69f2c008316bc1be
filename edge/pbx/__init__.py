"""The PBX logic above the SIP endpoint (the transaction user): registrar, authentication,
user backends, webhooks; later the B2BUA and the call-application engine."""
