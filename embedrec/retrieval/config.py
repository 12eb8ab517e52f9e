"""`configs/serve.toml` -> validated pydantic models for `embedrec serve`.

Sections: `[server]`, one per vector space (`[text]`, `[image]`, `[two_tower]`, each
optional), `[users]` (who the users are and what they have seen; needed by
`/recommend`) and `[stream]` (live events; optional). Unknown sections and keys are errors
that name them. Relative paths, store URIs' included, are taken from the config file's
folder (`from_config_folder`).
The API key never lives in the file: it comes from `EMBEDREC_API_KEY`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from embedrec.common.config import Section, from_config_folder, load_model
from embedrec.stores.uri import located_in

SpaceName = Literal["text", "image", "two-tower"]


class ServerConfig(Section):
    host: str = "127.0.0.1"
    """The address to listen on."""
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    """The TCP port to listen on."""
    similar_space: SpaceName | None = None
    """Space `/similar` searches when a request names none; default: two-tower, else text,
    else image (the first one configured)."""
    access_log: bool = False
    """Log one line per request."""
    workers: Annotated[int, Field(ge=1, le=64)] = 1
    """Server processes, each with its own copy of the stores and models: one per core
    serves the most requests (Python runs one request's code at a time per process)."""
    reload_interval_s: Annotated[float, Field(ge=0)] | None = 5.0
    """How often each space whose store is an alias checks whether the alias was swapped,
    and if so loads the new generation (and the model its store names) and swaps it in
    without a restart; 0 or none: only `POST /admin/reload` reloads. Plain stores are never
    reloaded."""
    drift_sample: Annotated[int, Field(ge=0, le=100_000)] = 500
    """Users and items sampled, after a reload, to compare the new generation with the one
    it replaced (the `embedrec_drift_*` gauges on /metrics); 0: no comparison."""


class SpaceConfig(Section):
    uri: str
    """The primary store (see `open_store`); it must exist."""
    replica: str | None = None
    """A store holding the same records, used when the primary fails or times out."""
    timeout_s: Annotated[float, Field(gt=0)] | None = 2.0
    """Longest wait for one call to a network store (Qdrant server, Pinecone) before falling
    back; none: wait as long as it takes. In-process stores are called inline, untimed."""
    cooldown_s: Annotated[float, Field(ge=0)] = 5.0
    """After a failure, how long calls go straight to the replica before the primary is
    tried again."""

    section: ClassVar[str]
    """The config section of this space (`text`, `image`, `two_tower`), for errors."""

    @field_validator("uri", "replica")
    @classmethod
    def _from_config_folder(cls, value: str | None, info: ValidationInfo) -> str | None:
        return from_config_folder(value, info, f"{cls.section}.{info.field_name}", located_in)


class TextSpaceConfig(SpaceConfig):
    section = "text"
    embedder: str | None = None
    """The embedder spec; none: the one that built the store (which it records), else
    `text`. One given must name the same model as the store's."""


class ImageSpaceConfig(SpaceConfig):
    section = "image"
    embedder: str | None = None
    """The embedder spec; none: the one that built the store (which it records), else
    `image`. One given must name the same model as the store's."""


class TwoTowerSpaceConfig(SpaceConfig):
    section = "two_tower"
    model: Path | None = None
    """A saved `TwoTowerModel` (the .pt file; its .json sits beside it); none: the model the
    store says built it (its store info), which follows the store's alias through a reload.
    One given must be that same model (its fingerprint)."""

    @field_validator("model")
    @classmethod
    def _model_from_config_folder(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return from_config_folder(value, info, "two_tower.model")


class UsersConfig(Section):
    """Users (user_id plus the model's user features) and ratings (user_id, item_id): either
    `data`, or both `users` and `ratings`."""

    data: Path | None = None
    """A train/evaluate config (TOML) whose [data] section describes the user table and the
    interactions, in its own column names: what `embedrec train` read."""
    users: Path | None = None
    """A user table (CSV, TSV, JSONL or Parquet, told by the name) with a user_id column and
    the model's user features."""
    ratings: Path | None = None
    """The interactions (a table as `users`) with user_id and item_id columns."""

    exclude_without_interactions: bool = False
    """Leave out of recommendations the catalog items no one has interacted with (their
    two-tower vectors come from their features alone; `embedrec train` lists them). Needs
    `data`, whose [data.items] is the catalog."""

    @field_validator("data", "users", "ratings")
    @classmethod
    def _from_config_folder(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        return from_config_folder(value, info, f"users.{info.field_name}")

    @model_validator(mode="after")
    def _one_source(self) -> UsersConfig:
        if self.exclude_without_interactions and self.data is None:
            raise ValueError("exclude_without_interactions needs data (a train config)")
        files = (self.users is not None, self.ratings is not None)
        if self.data is not None and any(files):
            raise ValueError("give data alone, without users + ratings files")
        if self.data is None and not all(files):
            raise ValueError("give data (a train config), or both users and ratings (table files)")
        return self


class StreamConfig(Section):
    """Events (`POST /events`, a Redis Stream) into users' live histories and the catalogue;
    see docs/realtime.md."""

    redis: str | None = None
    """`redis://HOST:PORT/DB`: histories live in Redis, shared by every worker, and events
    are read from the stream through a consumer group (its password, if any, from
    EMBEDREC_REDIS_PASSWORD). None: the embedded default, histories in process (one worker;
    lost on restart) and events only by `POST /events`."""
    stream: str = "embedrec:events"
    """The Redis Stream the events are read from (and `POST /events` adds to)."""
    group: str = "embedrec"
    """The consumer group of the stream; every worker and `embedrec stream` read in it."""
    prefix: str = "embedrec"
    """Prefix of the Redis keys that hold the histories."""
    consume: bool = True
    """`embedrec serve` runs a consumer in each worker; false: only `embedrec stream` does."""
    history_size: Annotated[int, Field(ge=1, le=10_000)] = 50
    """Entries kept per user: the sequence encoder's N."""
    history_max_age_s: Annotated[float, Field(gt=0)] | None = 30 * 86_400.0
    """Entries older than this (by event time) are dropped; none: kept until pushed out."""
    batch: Annotated[int, Field(ge=1, le=10_000)] = 500
    """Most entries read from the stream at a time."""
    block_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    """How long a read waits for new entries before it returns empty."""
    claim_idle_s: Annotated[float, Field(gt=0)] = 10.0
    """An entry left unacknowledged this long by its consumer (which died) is claimed."""
    refresh_s: Annotated[float, Field(gt=0, le=60)] = 0.5
    """How often each process looks for catalogue events that another process (another
    worker's consumer, `embedrec stream`) committed to a FAISS store it serves, and loads
    them: one small file read per store. Also how long a consumer takes an item it found in
    the catalogue as still there (another process may remove it) before asking again."""
    max_failures: Annotated[int, Field(ge=1, le=1_000)] = 5
    """Times applying an entry may fail with an error that is neither a bad event nor an
    outage (a bug) before it goes to the dead-letter stream with that error."""


class ServeConfig(Section):
    server: ServerConfig = ServerConfig()
    stream: StreamConfig | None = None
    text: TextSpaceConfig | None = None
    image: ImageSpaceConfig | None = None
    two_tower: TwoTowerSpaceConfig | None = None
    users: UsersConfig | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServeConfig:
        if self.text is None and self.image is None and self.two_tower is None:
            raise ValueError("configure at least one space: [text], [image] or [two_tower]")
        if self.stream is not None and self.users is None:
            raise ValueError("[stream] keeps users' histories, which needs [users]")
        if self.users is not None and self.two_tower is None:
            raise ValueError("[users] serves /recommend, which needs [two_tower]")
        wanted = self.server.similar_space
        if wanted is not None and getattr(self, wanted.replace("-", "_")) is None:
            raise ValueError(f"server.similar_space is {wanted!r} but that space is not configured")
        return self

    def spaces(self) -> dict[str, SpaceConfig]:
        """The configured spaces by name ("text", "image", "two-tower")."""
        found = {"text": self.text, "image": self.image, "two-tower": self.two_tower}
        return {name: cfg for name, cfg in found.items() if cfg is not None}


def load_serve_config(path: str | Path) -> ServeConfig:
    return load_model(path, ServeConfig)
