"""The VRRP speaker: packet codec, sans-IO state machine, thin I/O."""
