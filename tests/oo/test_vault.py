"""Tokens at rest: encrypted with rotating keys; the dev key is refused outside local mode."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from oo.settings import DEV_VAULT_KEY, Settings
from oo.vault import Vault, VaultError


def key() -> SecretStr:
    return SecretStr(Fernet.generate_key().decode())


def test_a_token_round_trips_and_the_ciphertext_does_not_contain_it() -> None:
    vault = Vault([key()])
    cipher = vault.encrypt(SecretStr("todoist-token-0123456789"))
    assert b"todoist-token" not in cipher
    assert vault.decrypt(cipher).get_secret_value() == "todoist-token-0123456789"
    assert "todoist-token" not in repr(vault.decrypt(cipher)) + str(vault.decrypt(cipher))


def test_keys_rotate_old_ciphertexts_still_open_and_move_to_the_new_key() -> None:
    old, new = key(), key()
    cipher = Vault([old]).encrypt(SecretStr("t"))
    rotated_vault = Vault([new, old])
    assert rotated_vault.decrypt(cipher).get_secret_value() == "t"
    moved = rotated_vault.rotate(cipher)
    assert Vault([new]).decrypt(moved).get_secret_value() == "t"
    with pytest.raises(VaultError, match="no vault key"):
        Vault([new]).decrypt(cipher)


def test_tampered_ciphertext_and_bad_keys_are_refused_without_echoing_them() -> None:
    vault = Vault([key()])
    cipher = bytearray(vault.encrypt(SecretStr("t")))
    cipher[-5] ^= 1
    with pytest.raises(VaultError):
        vault.decrypt(bytes(cipher))
    with pytest.raises(VaultError) as caught:
        Vault([SecretStr("not-a-fernet-key")])
    assert "not-a-fernet-key" not in str(caught.value)
    with pytest.raises(VaultError):
        Vault([])


def test_the_dev_key_works_locally_and_is_refused_elsewhere() -> None:
    assert Vault(Settings(env="local").vault.keys).decrypt(Vault([SecretStr(DEV_VAULT_KEY)]).encrypt(SecretStr("x")))
    with pytest.raises(ValueError, match="dev key"):
        Settings(env="prod", todoist={"client_secret": "real"})
