"""The envelope every kind shares: apiVersion, kind, metadata, spec, status."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from schemas.meta import API_VERSION, Model, ObjectMeta, Status

SECRET_DIGESTS = "secretDigests"
"""The key beside ``spec`` in a stored object where the store keeps salted digests of its
secrets (zkstore/secrets.py): the store's own record, never part of the object a daemon
reads or a client sees (a client sending it has it ignored)."""


class Resource(Model):
    """Base of the four kinds. Subclasses narrow ``kind``, ``spec`` and ``status``."""

    KIND: ClassVar[str] = ""
    PLURAL: ClassVar[str] = ""
    SHORT_NAMES: ClassVar[tuple[str, ...]] = ()
    SECRET_FIELDS: ClassVar[tuple[tuple[str, ...], ...]] = ()
    """Where in ``spec`` this kind keeps secrets (paths of keys): the store keeps their
    values in a znode of their own, readable only by the daemons that use them."""
    FINALIZERS: ClassVar[tuple[str, ...]] = ()
    """Finalizers the store puts on every new object of the kind."""

    api_version: str = Field(default=API_VERSION)
    kind: str
    metadata: ObjectMeta
    spec: Model
    status: Status | None = None

    @model_validator(mode="before")
    @classmethod
    def _without_store_records(cls, data: Any) -> Any:
        if isinstance(data, dict) and SECRET_DIGESTS in data:
            return {k: v for k, v in data.items() if k != SECRET_DIGESTS}
        return data

    @field_validator("api_version")
    @classmethod
    def _known_api_version(cls, value: str) -> str:
        if value != API_VERSION:
            raise ValueError(f"unsupported apiVersion {value!r}: expected {API_VERSION!r}")
        return value

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def deleting(self) -> bool:
        """A delete was asked and waits for the object's finalizers (kubectl: Terminating)."""
        return self.metadata.deletion_timestamp is not None

    @classmethod
    def keep_secrets(cls, new_spec: dict[str, Any], current_spec: dict[str, Any]) -> None:
        """Put back stored secrets where ``new_spec`` carries only their mask (read-edit-apply)."""

    def stored(self) -> dict[str, Any]:
        """The form kept in ZooKeeper: like wire() but secrets revealed, status apart."""
        data = self.model_dump(
            mode="json", by_alias=True, exclude_none=True, context={"reveal_secrets": True}
        )
        data.pop("status", None)
        return data
