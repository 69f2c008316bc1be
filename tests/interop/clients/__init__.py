"""Drivers for real SIP clients (baresip, linphonec) used by the interop tests."""
