"""The public wire language of the PBX: pydantic models of every webhook, API body and event.

Router, user-backend and locator webhooks, NCCO call-control steps, events, commands and CDRs
(field-compatible with RustPBX where it defines them; see COMPAT.md). No IO here.
"""
