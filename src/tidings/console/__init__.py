"""The console: a local web view to operate the outbox, the inbox, sagas and projections.

Pages render on the server (Jinja2, autoescaped) from the same store methods the CLI
calls; actions are POST forms with a CSRF token, recorded where the CLI records them.
Needs the ``console`` extra (Starlette, Jinja2, uvicorn).
"""
