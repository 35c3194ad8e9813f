"""Third-party tokens encrypted at rest with cryptography's MultiFernet (keys rotate).

Keys come from ``OO_VAULT__KEYS`` (newest first). The settings refuse the dev key outside local
mode. Encryption uses the newest key; decryption tries each key, so rotating is: prepend a new
key, run :meth:`Vault.rotate` over the stored ciphertexts, then drop the old key.

A token only ever leaves the vault as a :class:`pydantic.SecretStr`, whose ``repr`` and ``str``
are masked, so a token logged or put into an exception by mistake shows as ``**********``.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from pydantic import SecretStr


class VaultError(ValueError):
    """A ciphertext no configured key can open (wrong key, or tampered data)."""


class Vault:
    """Encrypts and decrypts tokens with the configured keys.

    Examples
    --------
    >>> key = Fernet.generate_key().decode()
    >>> vault = Vault([SecretStr(key)])
    >>> secret = vault.encrypt(SecretStr("tok-123"))
    >>> b"tok-123" in secret, vault.decrypt(secret)
    (False, SecretStr('**********'))
    >>> vault.decrypt(secret).get_secret_value()
    'tok-123'
    """

    def __init__(self, keys: Sequence[SecretStr]) -> None:
        if not keys:
            raise VaultError("the vault needs at least one key (OO_VAULT__KEYS)")
        try:
            self._fernet = MultiFernet([Fernet(k.get_secret_value().encode()) for k in keys])
        except ValueError:
            raise VaultError("OO_VAULT__KEYS holds a value that is not a Fernet key") from None

    def encrypt(self, token: SecretStr) -> bytes:
        """The ciphertext of ``token`` under the newest key."""
        return self._fernet.encrypt(token.get_secret_value().encode())

    def decrypt(self, ciphertext: bytes) -> SecretStr:
        """The token inside ``ciphertext``; :class:`VaultError` if no key opens it."""
        try:
            return SecretStr(self._fernet.decrypt(ciphertext).decode())
        except InvalidToken:
            raise VaultError("no vault key opens this ciphertext (rotated away, or tampered)") from None

    def rotate(self, ciphertext: bytes) -> bytes:
        """``ciphertext`` re-encrypted under the newest key."""
        try:
            return self._fernet.rotate(ciphertext)
        except InvalidToken:
            raise VaultError("no vault key opens this ciphertext (rotated away, or tampered)") from None


def get_vault() -> Vault:
    """The vault with the keys named by the settings."""
    from oo.settings import get_settings

    return Vault(get_settings().vault.keys)
