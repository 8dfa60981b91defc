"""Single sign-on through OpenID Connect, against a real provider on loopback."""
