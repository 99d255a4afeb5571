"""Accounts and tokens: registration, password checks, token issue, verification and revocation.

Fixes the original's weaknesses (plaintext passwords, `/x/user/auth` that never checked the password,
deterministic tokens that never expired): passwords are scrypt hashes, tokens are random, expire, are
revocable and stored as SHA-256. The original md5(uid+salt) tokens are accepted only when
`ChatSettings.legacy_token_salt` is set; such tokens have no expiry and cannot be revoked, which is
why the mode is off by default.
"""

from __future__ import annotations

import asyncio
import logging

from fishchat.domain import passwords, tokens, validation
from fishchat.domain.clock import Clock
from fishchat.domain.errors import BadToken, NoSuchUser, NoToken, TokenExpired, WrongPassword
from fishchat.domain.ports import AccountStore, TokenStore
from fishchat.domain.records import Account, IssuedToken, TokenInfo, User
from fishchat.domain.settings import ChatSettings

log = logging.getLogger(__name__)

# Tokens are 43 characters; anything far longer is refused before hashing.
_MAX_TOKEN_CHARS = 512


class AccountService:
    def __init__(
        self, accounts: AccountStore, token_store: TokenStore, settings: ChatSettings, clock: Clock
    ) -> None:
        self._accounts = accounts
        self._tokens = token_store
        self._settings = settings
        self._clock = clock

    async def register(self, uid: int, name: str, password: str) -> User:
        """Create an account; `UserExists` if the uid or the name is taken."""
        uid = validation.check_id(uid, "uid")
        name = validation.check_display_name(name, "name", self._settings.name_max_chars)
        password = validation.check_password(
            password, self._settings.password_min_chars, self._settings.password_max_chars
        )
        password_hash = await asyncio.to_thread(passwords.hash_password, password, self._settings.scrypt)
        account = Account(uid=uid, name=name, password_hash=password_hash, created_at_ms=self._clock.now_ms())
        await self._accounts.create(account)
        return account.user

    async def get_user(self, uid: int) -> User:
        account = await self._accounts.get(validation.check_id(uid, "uid"))
        if account is None:
            raise NoSuchUser(f"no user with uid {uid}")
        return account.user

    async def authenticate(self, uid: int, password: str) -> IssuedToken:
        """Check the password and issue a new token (several may be live: one per device or client)."""
        uid = validation.check_id(uid, "uid")
        if not isinstance(password, str) or len(password) > self._settings.password_max_chars:
            raise WrongPassword()
        account = await self._accounts.get(uid)
        if account is None:
            raise NoSuchUser(f"no user with uid {uid}")
        if not await asyncio.to_thread(passwords.verify_password, password, account.password_hash):
            raise WrongPassword()
        if passwords.needs_rehash(account.password_hash, self._settings.scrypt):
            new_hash = await asyncio.to_thread(passwords.hash_password, password, self._settings.scrypt)
            await self._accounts.set_password_hash(uid, new_hash)
        token = tokens.new_token()
        now = self._clock.now_ms()
        info = TokenInfo(
            token_hash=tokens.token_hash(token),
            uid=uid,
            issued_at_ms=now,
            expires_at_ms=now + self._settings.token_ttl_s * 1000,
        )
        await self._tokens.put(info)
        return IssuedToken(token=token, uid=uid, expires_at_ms=info.expires_at_ms)

    async def verify_token(self, token: str, uid: int | None = None) -> TokenInfo:
        """The live token record; with `uid`, the token must belong to that user.

        `NoToken` for an empty token, `BadToken` for an unknown, revoked or foreign one,
        `TokenExpired` for an expired one (which is deleted on the way).
        """
        if not isinstance(token, str) or not token.strip():
            raise NoToken()
        if len(token) > _MAX_TOKEN_CHARS:
            raise BadToken()
        if uid is not None:
            uid = validation.check_id(uid, "UID")
            salt = self._settings.legacy_token_salt
            if salt is not None and tokens.is_legacy_token(uid, token, salt):
                return TokenInfo(
                    token_hash=tokens.token_hash(token), uid=uid, issued_at_ms=0, expires_at_ms=0, legacy=True
                )
        digest = tokens.token_hash(token)
        info = await self._tokens.get(digest)
        if info is None or (uid is not None and info.uid != uid):
            raise BadToken()
        if info.expires_at_ms <= self._clock.now_ms():
            await self._tokens.delete(digest)
            raise TokenExpired()
        return info

    async def revoke(self, token: str, uid: int | None = None) -> bool:
        """Revoke one token (logout); with `uid`, only if the token is that user's. True if it was
        stored. Legacy tokens are never stored, so they cannot be revoked."""
        if not isinstance(token, str) or not token or len(token) > _MAX_TOKEN_CHARS:
            return False
        digest = tokens.token_hash(token)
        if uid is not None:
            info = await self._tokens.get(digest)
            if info is None or info.uid != uid:
                return False
        return await self._tokens.delete(digest)

    async def change_password(self, uid: int, password: str, new_password: str) -> int:
        """Check the current password, store the new one and revoke every token of the user; returns
        how many tokens were revoked (the caller ends their sessions and may issue a new token)."""
        uid = validation.check_id(uid, "uid")
        new_password = validation.check_password(
            new_password, self._settings.password_min_chars, self._settings.password_max_chars
        )
        account = await self._accounts.get(uid)
        if account is None:
            raise NoSuchUser(f"no user with uid {uid}")
        if not isinstance(password, str) or not await asyncio.to_thread(
            passwords.verify_password, password, account.password_hash
        ):
            raise WrongPassword()
        new_hash = await asyncio.to_thread(passwords.hash_password, new_password, self._settings.scrypt)
        await self._accounts.set_password_hash(uid, new_hash)
        return await self._tokens.delete_user(uid)

    async def revoke_all(self, uid: int) -> int:
        """Revoke every token of a user (logout everywhere)."""
        return await self._tokens.delete_user(validation.check_id(uid, "uid"))
