"""The Notification context of both sagas: a mail server that can be down, and the mails
sent, kept as rows of ``saga_emails`` under the step's idempotency key."""

from __future__ import annotations

from tidings.application.unit_of_work import UnitOfWork

EMAILS_DDL = """
CREATE TABLE IF NOT EXISTS saga_emails (
    idempotency_key TEXT PRIMARY KEY,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL
)
"""


class MailServer:
    """The mail server (in-process here); ``down`` makes every send fail as a refused
    connection would: a transient failure, which the saga retries before it compensates."""

    def __init__(self, down: bool = False) -> None:
        self.down = down
        self.outbox: dict[str, tuple[str, str]] = {}

    def send(self, recipient: str, subject: str, key: str) -> None:
        """Send one mail per key."""
        if self.down:
            raise ConnectionError("mail server: connection refused")
        self.outbox.setdefault(key, (recipient, subject))


def send_mail(uow: UnitOfWork, mail: MailServer, recipient: str, subject: str, key: str) -> None:
    """Send a mail and keep a row of it in the step's transaction (once per key)."""
    mail.send(recipient, subject, key)
    uow.execute(
        "INSERT INTO saga_emails VALUES (:key, :to, :subject) ON CONFLICT DO NOTHING",
        {"key": key, "to": recipient, "subject": subject},
    )


def mails_to(uow: UnitOfWork, recipient: str) -> list[str]:
    """Subjects of the mails sent to ``recipient``."""
    rows = uow.execute(
        "SELECT subject FROM saga_emails WHERE recipient = :to ORDER BY subject",
        {"to": recipient},
    ).fetchall()
    return [r[0] for r in rows]
