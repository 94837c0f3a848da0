"""The SMTP edge: mail for several domains behind one address.

`envelope` is the sans-IO state machine (h11's shape), `data` the DATA-stream
scanner (smuggling defence), `address` paths and routing (relay defence),
`backend` the client leg to the pool's servers, `frontend` the I/O side.
"""

from proxy.smtp.envelope import Envelope, Policy
from proxy.smtp.frontend import SmtpFrontend
from proxy.smtp.stats import SmtpStats

__all__ = ["Envelope", "Policy", "SmtpFrontend", "SmtpStats"]
