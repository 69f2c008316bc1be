"""The stateless control plane: Starlette apps that decide (auth, routing, call control) and store.

Runs in-process beside the edge in embedded mode, or on AWS Lambda behind API Gateway (Mangum,
`control.handlers`). It never imports `edge`, so a Lambda package carries no SIP stack and no numpy.
"""
