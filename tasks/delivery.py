"""SMS providers: where a QUEUED message goes. Logging by default; HTTP with ordered failover.

`SmsProvider.send(message) -> SentMessage` hands over one message and says where it went and
under which provider id; it raises TransientError to retry, PermanentError to give up.

Failover (SMS_PROVIDER_URLS, in order) never hands one message to two providers. The
Idempotency-Key is the message id, but each provider deduplicates only its own traffic, so:

* A failure that proves the provider never received the request (connection refused, name not
  resolved, connect or TLS failure, connect timeout, or its circuit open so nothing was tried)
  lets the message move on to the next provider, within the same attempt.
* A failure after which the provider may have accepted it (a timeout while waiting for the
  answer, a 5xx, a dropped connection) leaves the message committed to that provider: every
  retry goes to that provider only, with the same key, until it answers.
* The provider a message is committed to is recorded (messages.provider) BEFORE the call, so a
  worker killed in the middle of the call leaves the commitment behind. A message that
  arrives already committed (an earlier attempt may have reached that provider) never moves.

This needs two things from the caller, which tasks/deliveries.py provides: `pins`, whose
`pin` commits before it returns (an autocommit connection), and no other process delivering
the same message while `send` runs (the message's delivery lease, db/delivery.py).

The HTTP provider POSTs JSON `{"message_id", "tenant_id", "to", "body"}` with
`Idempotency-Key: <message id>` and expects a 2xx whose body is a JSON object; its `"id"`
(a string or a number, at most 255 characters) is stored as `messages.provider_message_id`.
A missing or unusable id is fine: the column stays null.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from db import delivery
from db.delivery import OutboundMessage
from tasks import metrics
from tasks.circuit_breaker import CircuitBreaker, breaker_for
from tasks.errors import PermanentError, TransientError
from tasks.http import TransientHttpError, provider_egress, safe_url
from tasks.settings import EngineSettings

log = logging.getLogger("journey_worker.delivery")

MAX_PROVIDER_MESSAGE_ID = 255


@dataclass(frozen=True)
class SentMessage:
    provider: str  # the provider's name: its URL without credentials or query (or "log")
    provider_message_id: str | None


# Called right before a message goes on the wire: sleeps until the message's send slot (a
# tenant's send rate), and says False if the slot is gone (tasks/deliveries.py).
SendGate = Callable[[], bool]


class SlotMissed(Exception):
    """The message's send slot passed before it could go: not sent, not committed anywhere."""


class SmsProvider(Protocol):
    def send(self, message: OutboundMessage, gate: SendGate | None = None) -> SentMessage:
        """Hand the message over, passing `gate` just before the call. Raise TransientError to
        retry, PermanentError to give up, SlotMissed when the gate closed."""


class ProviderPins(Protocol):
    def pin(self, message_id: uuid.UUID, expected: str | None, provider: str | None) -> bool:
        """Set the provider the message is committed to, from `expected` to `provider`, and
        commit before returning. False if the record no longer says `expected`."""


class DatabasePins:
    """messages.provider through the delivery's autocommit connection: each pin commits."""

    def __init__(self, session: Session | Connection) -> None:
        self.session = session

    def pin(self, message_id: uuid.UUID, expected: str | None, provider: str | None) -> bool:
        return delivery.pin_message_provider(
            self.session, message_id, expected=expected, provider=provider
        )


class LoggingProvider:
    """The default: writes the delivery to the log and reports success."""

    name = "log"

    def send(self, message: OutboundMessage, gate: SendGate | None = None) -> SentMessage:
        if gate is not None and not gate():
            raise SlotMissed(str(message.id))
        log.info(
            "sms delivered (logging provider) message_id=%s tenant_id=%s length=%d",
            message.id,
            message.tenant_id,
            len(message.body),
        )
        return SentMessage(self.name, f"log-{message.id}")


class HttpProvider:
    """One HTTP endpoint. The message id is the Idempotency-Key, so a retried delivery (after a
    timeout or a worker crash) is recognised by the provider."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.name = safe_url(url)
        self.timeout = timeout

    def send(self, message: OutboundMessage) -> SentMessage:
        response = provider_egress().call_json(
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
        return SentMessage(self.name, provider_message_id(response.json()))


def provider_message_id(answer: Any) -> str | None:
    """The provider's id from its JSON answer: `{"id": "..."}`; None if absent or unusable."""
    if not isinstance(answer, dict):
        return None
    value = answer.get("id")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text if 0 < len(text) <= MAX_PROVIDER_MESSAGE_ID else None


class FailoverProvider:
    """Ordered providers, a circuit breaker each, at most one provider per message."""

    def __init__(
        self,
        providers: Sequence[HttpProvider],
        pins: ProviderPins,
        breakers: Sequence[CircuitBreaker],
    ) -> None:
        assert providers and len(providers) == len(breakers)
        self.providers = list(providers)
        self.pins = pins
        self.breakers = {p.name: b for p, b in zip(providers, breakers, strict=True)}

    def send(self, message: OutboundMessage, gate: SendGate | None = None) -> SentMessage:
        if not message.phone:
            raise PermanentError("contact has no phone number")
        if message.provider is not None:
            return self._send_committed(message, message.provider, gate)
        committed: str | None = None
        unreached: list[str] = []
        for provider in self.providers:
            breaker = self.breakers[provider.name]
            if not breaker.allows():
                metrics.SMS_PROVIDER_ATTEMPTS.labels(provider.name, "skipped_circuit_open").inc()
                unreached.append(f"{provider.name}: circuit open")
                continue
            if not self.pins.pin(message.id, committed, provider.name):
                raise TransientError("sms_provider_pin_lost: the message's provider changed")
            committed = provider.name
            try:
                return self._attempt(provider, breaker, message, gate)
            except SlotMissed:
                # Never sent: the commitment this attempt made goes again.
                self.pins.pin(message.id, committed, None)
                raise
            except TransientHttpError as exc:
                if exc.request_sent:
                    raise  # it may have been accepted: committed to this provider from now on
                unreached.append(exc.reason)
                if provider is not self.providers[-1]:
                    log.warning(
                        "sms provider unreachable, failing over message_id=%s provider=%s: %s",
                        message.id,
                        provider.name,
                        exc.reason,
                    )
        if committed is not None and not self.pins.pin(message.id, committed, None):
            raise TransientError("sms_provider_pin_lost: the message's provider changed")
        # Nothing reached any provider: a retry may start from the first again.
        raise TransientError(f"no SMS provider reachable: {'; '.join(unreached)}")

    def _send_committed(
        self, message: OutboundMessage, name: str, gate: SendGate | None
    ) -> SentMessage:
        provider = next((p for p in self.providers if p.name == name), None)
        if provider is None:
            # It may have accepted the message; sending it anywhere else could text twice.
            raise PermanentError(f"sms_provider_not_configured: {name}")
        breaker = self.breakers[name]
        if not breaker.allows():
            metrics.SMS_PROVIDER_ATTEMPTS.labels(name, "skipped_circuit_open").inc()
            raise TransientError(f"sms_provider_circuit_open: {name}")
        return self._attempt(provider, breaker, message, gate)

    def _attempt(
        self,
        provider: HttpProvider,
        breaker: CircuitBreaker,
        message: OutboundMessage,
        gate: SendGate | None,
    ) -> SentMessage:
        if gate is not None and not gate():
            raise SlotMissed(str(message.id))
        try:
            sent = provider.send(message)
        except TransientHttpError as exc:
            breaker.record_failure()
            outcome = "failed_ambiguous" if exc.request_sent else "failed_unreached"
            metrics.SMS_PROVIDER_ATTEMPTS.labels(provider.name, outcome).inc()
            raise
        except PermanentError:
            breaker.record_success()  # it answered: healthy, even if it said no
            metrics.SMS_PROVIDER_ATTEMPTS.labels(provider.name, "rejected").inc()
            raise
        breaker.record_success()
        metrics.SMS_PROVIDER_ATTEMPTS.labels(provider.name, "sent").inc()
        return sent


def provider_from_settings(settings: EngineSettings, pins: ProviderPins) -> SmsProvider:
    if settings.sms_provider != "http":
        return LoggingProvider()
    urls = settings.provider_urls
    assert urls, "EngineSettings.from_env requires a URL for SMS_PROVIDER=http"
    providers = [HttpProvider(url, settings.sms_provider_timeout) for url in urls]
    breakers = [
        breaker_for(
            p.name, settings.sms_provider_failure_threshold, settings.sms_provider_cooldown_seconds
        )
        for p in providers
    ]
    return FailoverProvider(providers, pins, breakers)
