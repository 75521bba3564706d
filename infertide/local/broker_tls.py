"""SCRAM-SHA-512 over TLS for the local broker: a local CA, a broker certificate, SCRAM users made at format time.

:class:`SaslSsl` keeps its material in one folder (the broker's run folder ``tls/``), so a broker restarted
on the same folder finds the same certificate and the same passwords (SCRAM credentials live in the
broker's metadata log, written once when the storage is formatted). Secrets are files of mode 0600;
SCRAM users are given to the storage tool as salted hashes, so no password appears in a command line.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MECHANISM", "SaslSsl"]

MECHANISM = "SCRAM-SHA-512"
_ITERATIONS = 8192  # Kafka's minimum for SCRAM-SHA-512 is 4096
_BROKER_USER = "broker"  # the broker's own login on its SASL_SSL listener (inter-broker)


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _scram_arg(user: str, password: str) -> str:
    """A ``kafka-storage format --add-scram`` value carrying a salted hash (RFC 5802 Hi()), not the password."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    return (f'{MECHANISM}=[name={user},iterations={_ITERATIONS},salt="{base64.b64encode(salt).decode()}",'
            f'saltedpassword="{base64.b64encode(salted).decode()}"]')


@dataclass
class SaslSsl:
    """One SASL_SSL (SCRAM-SHA-512) listener's material: CA, broker key store, a client user and the broker's user.

    Use :meth:`load_or_create`; the passwords are read from (or written to) ``folder``.
    """

    folder: Path
    username: str
    password: str = field(repr=False)
    broker_password: str = field(repr=False)
    store_password: str = field(repr=False)

    @classmethod
    def load_or_create(cls, folder: Path, username: str = "infertide", password: str | None = None) -> SaslSsl:
        """The material in ``folder``, made on first use (a random client password unless ``password`` is given).

        Raises:
            ValueError: ``folder`` already holds another user or password (its broker was formatted with them).
        """
        folder.mkdir(parents=True, exist_ok=True)
        saved = folder / "secrets.json"
        if saved.is_file():
            data = json.loads(saved.read_text())
            if data["username"] != username or (password is not None and password != data["password"]):
                raise ValueError(f"{folder} was made for user {data['username']!r} with another password; "
                                 "its broker keeps those SCRAM credentials: use them, or a new broker folder")
            tls = cls(folder, **data)
        else:
            tls = cls(folder, username, password or secrets.token_urlsafe(24), secrets.token_urlsafe(24),
                      secrets.token_urlsafe(24))
            _write_secret(saved, json.dumps({"username": tls.username, "password": tls.password,
                                             "broker_password": tls.broker_password,
                                             "store_password": tls.store_password}).encode())
            _write_secret(tls.password_file, tls.password.encode())
        if not tls.keystore.is_file():
            tls._make_certificates()
        return tls

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.folder / "broker.p12"

    @property
    def password_file(self) -> Path:
        """The client password alone (mode 0600): ``export KAFKA_SASL_PASSWORD=$(cat <this>)``."""
        return self.folder / "client-password"

    def _make_certificates(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import pkcs12
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = dt.datetime.now(dt.UTC)
        valid = {"not_valid_before": now - dt.timedelta(minutes=5), "not_valid_after": now + dt.timedelta(days=825)}
        ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "infertide local CA")])
        ca = (x509.CertificateBuilder(issuer_name=ca_name, subject_name=ca_name, public_key=ca_key.public_key(),
                                      serial_number=x509.random_serial_number(), **valid)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        # Clients check the host name: the certificate names every way the listener is reached locally.
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        cert = (x509.CertificateBuilder(issuer_name=ca_name, public_key=key.public_key(),
                                        subject_name=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]),
                                        serial_number=x509.random_serial_number(), **valid)
                .add_extension(x509.SubjectAlternativeName(sans), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        self.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        _write_secret(self.keystore, pkcs12.serialize_key_and_certificates(
            b"broker", key, cert, [ca], serialization.BestAvailableEncryption(self.store_password.encode())))

    def broker_properties(self, port: int, controller_port: int) -> dict[str, str]:
        """``server.properties`` entries: one SASL_SSL client listener (also inter-broker); the controller on loopback.

        The listener also takes PLAIN (still inside TLS) for librdkafka before 2.6.1 (kcat, confluent-kafka):
        its SCRAM repeats the client nonce, which Kafka 4 refuses (confluentinc/librdkafka#4895), and
        Debian 12 ships 2.0.2. PLAIN's users live in this file, which the broker writes with mode 0600.
        """
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{_BROKER_USER}" '
                f'password="{self.broker_password}";')
        plain = (f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{_BROKER_USER}" '
                 f'password="{self.broker_password}" user_{_BROKER_USER}="{self.broker_password}" '
                 f'user_{self.username}="{self.password}";')
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": f"{MECHANISM},PLAIN",
            "sasl.mechanism.inter.broker.protocol": MECHANISM,
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config": jaas,
            "listener.name.sasl_ssl.plain.sasl.jaas.config": plain,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(self.keystore),
            "ssl.keystore.password": self.store_password,
            "ssl.key.password": self.store_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(self.ca_file),
        }

    def format_args(self) -> list[str]:
        """``kafka-storage format`` arguments that create the client's and the broker's SCRAM users."""
        return ["--add-scram", _scram_arg(self.username, self.password),
                "--add-scram", _scram_arg(_BROKER_USER, self.broker_password)]

    def kafka_section(self, bootstrap: str, password_env: str = "KAFKA_SASL_PASSWORD") -> dict[str, Any]:
        """A topology ``kafka:`` section for this listener (the password stays in ``password_env``)."""
        return {"bootstrap_servers": bootstrap, "security_protocol": "SASL_SSL", "sasl_mechanism": MECHANISM,
                "sasl_username": self.username, "sasl_password_env": password_env, "ssl_cafile": str(self.ca_file)}

    def client_kwargs(self) -> dict[str, Any]:
        """kafka-python client settings for this listener (password included: never log them)."""
        return {"security_protocol": "SASL_SSL", "sasl_mechanism": MECHANISM, "sasl_plain_username": self.username,
                "sasl_plain_password": self.password, "ssl_cafile": str(self.ca_file)}
