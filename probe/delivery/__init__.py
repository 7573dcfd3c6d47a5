"""Delivery: send the burst through the gateway, receive it in the sink, wait until it settles."""
