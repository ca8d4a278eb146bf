"""SMS providers: where a QUEUED message goes. Pluggable; logging by default."""

from __future__ import annotations

import logging
from typing import Protocol

from db.delivery import OutboundMessage
from tasks.errors import PermanentError
from tasks.http import call_json
from tasks.settings import EngineSettings

log = logging.getLogger("journey_worker.delivery")


class SmsProvider(Protocol):
    def send(self, message: OutboundMessage) -> None:
        """Hand the message over. Raise TransientError to retry, PermanentError to give up."""


class LoggingProvider:
    """The default: writes the delivery to the log and reports success."""

    def send(self, message: OutboundMessage) -> None:
        log.info(
            "sms delivered (logging provider) message_id=%s tenant_id=%s length=%d",
            message.id,
            message.tenant_id,
            len(message.body),
        )


class HttpProvider:
    """POSTs the message as JSON; the message id is the Idempotency-Key, so a retried
    delivery (after a timeout or a worker crash) is recognised by the provider."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    def send(self, message: OutboundMessage) -> None:
        if not message.phone:
            raise PermanentError("contact has no phone number")
        call_json(
            self.url,
            {
                "message_id": str(message.id),
                "tenant_id": str(message.tenant_id),
                "to": message.phone,
                "body": message.body,
            },
            timeout=self.timeout,
            idempotency_key=str(message.id),
        )


def provider_from_settings(settings: EngineSettings) -> SmsProvider:
    if settings.sms_provider == "http":
        assert settings.sms_provider_url is not None
        return HttpProvider(
            settings.sms_provider_url.get_secret_value(), settings.sms_provider_timeout
        )
    return LoggingProvider()
