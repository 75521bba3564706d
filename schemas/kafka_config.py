"""The ``kafka:`` section of a topology: brokers, security, consumer group and client timings."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from schemas.config_base import ConfigError, PositiveFloat, Strict

__all__ = ["KafkaConfig", "SaslMechanism", "SecurityProtocol"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI", "OAUTHBEARER"]


class KafkaConfig(Strict):
    """How to reach the brokers. The CLI lets ``--bootstrap``, then ``INFERTIDE_KAFKA_BOOTSTRAP_SERVERS`` or
    ``KAFKA_BOOTSTRAP_SERVERS``, override ``bootstrap_servers`` (``infertide.settings``)."""

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    # The password is never written in the YAML: name the environment variable that holds it.
    sasl_password_env: str | None = "KAFKA_SASL_PASSWORD"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # Also the Faust app id: it prefixes internal topics (``<group>-summaries``, ``<group>-recommendations-state``).
    consumer_group: str = "infertide"
    session_timeout_s: PositiveFloat = 10.0
    heartbeat_interval_s: PositiveFloat = 3.0
    # How often offsets are committed. In exactly-once also how long results wait before readers
    # (read_committed) see them: one transaction per interval. None: 1 s at-least-once, 0.1 s exactly-once.
    commit_interval_s: PositiveFloat | None = None
    # Exactly-once: the broker aborts a worker's open transaction after this long without a commit (a worker
    # that died and is not restarted under the same id); until then read_committed readers wait on it. Also
    # how long a record may wait for an unreachable broker (librdkafka caps message.timeout.ms at it), so a
    # broker restart must fit in it. Kafka's own default.
    transaction_timeout_s: Annotated[float, Field(ge=1, le=900)] = 60.0
    producer_linger_s: Annotated[float, Field(ge=0)] = 0.005
    # On a rebalance, how long in-flight batches may take to finish before they are abandoned
    # (not committed; read again by the partition's next owner). The group waits this long at most.
    revoke_drain_timeout_s: PositiveFloat = 30.0

    @model_validator(mode="after")
    def _sasl_needs_mechanism(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(
                "security_protocol is SASL_* but sasl_mechanism is not set; "
                "add e.g. `sasl_mechanism: SCRAM-SHA-512` under `kafka:`"
            )
        return self

    def commit_every_s(self, exactly_once: bool) -> float:
        """The commit interval in effect (``commit_interval_s``, or the guarantee's default)."""
        if self.commit_interval_s is not None:
            return self.commit_interval_s
        return 0.1 if exactly_once else 1.0

    @property
    def routes_group(self) -> str:
        """The consumer group of the route consumers (``<consumer_group>-routes``); scale and watch lag on it."""
        return f"{self.consumer_group}-routes"

    @property
    def analytics_group(self) -> str:
        """The consumer group that folds the summary topic into analytics windows (one owner at a time)."""
        return f"{self.consumer_group}-analytics"

    @property
    def recommendations_group(self) -> str:
        """The consumer group that folds the summary topic into recommendations (one owner at a time)."""
        return f"{self.consumer_group}-recommendations"

    def sasl_password(self) -> str | None:
        """The SASL password read from the environment variable the config names."""
        return os.environ.get(self.sasl_password_env) if self.sasl_password_env else None

    def client_kwargs(self, bootstrap: str | None = None) -> dict[str, Any]:
        """Bootstrap, protocol and SASL settings under the names kafka-python and aiokafka share.

        Raises:
            ConfigError: SASL PLAIN/SCRAM is configured but the password variable is not set.
        """
        kw: dict[str, Any] = {"bootstrap_servers": bootstrap or self.bootstrap_servers,
                              "security_protocol": self.security_protocol}
        if self.security_protocol.startswith("SASL"):
            kw["sasl_mechanism"] = self.sasl_mechanism
            if self.sasl_username is not None:
                kw["sasl_plain_username"] = self.sasl_username
            if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
                password = self.sasl_password()
                if password is None:
                    raise ConfigError(
                        f"kafka.sasl_mechanism is {self.sasl_mechanism} but the environment variable "
                        f"{self.sasl_password_env!r} (kafka.sasl_password_env) is not set; export it with the password"
                    )
                kw["sasl_plain_password"] = password
        return kw
