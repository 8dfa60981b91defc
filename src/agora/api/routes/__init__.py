"""One router per domain; each only speaks HTTP."""
