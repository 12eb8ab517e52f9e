"""The one error hierarchy of embedrec's stores, rooted at `StoreError`."""


class StoreError(Exception):
    """Root of every error a store raises."""


class FilterError(StoreError, ValueError):
    """A filter that is not valid in the filter language; the message names the node."""


class DimensionError(StoreError, ValueError):
    """A vector whose dimension differs from the store's, or a store opened with another dim."""


class VectorError(StoreError, ValueError):
    """A vector with NaN or inf values, or a zero vector under the cosine metric."""


class MetadataError(StoreError, ValueError):
    """Metadata outside the allowed types (str, int, float, bool, list of str)."""


class IdError(StoreError, ValueError):
    """An empty id, an id of another type, or the same id twice in one batch."""


class ConfigError(StoreError, ValueError):
    """A bad store URI, an unknown option, or options that contradict an existing store."""


class AuthError(StoreError):
    """The store refused the credentials (a missing, wrong or under-privileged API key)."""


class StoreUnavailable(StoreError):
    """The store could not be reached (down, timed out, or kept failing after retries)."""


class StoreNotFound(StoreError):
    """The store (index, collection or directory) does not exist and may not be created."""


class CorruptStore(StoreError):
    """Persisted files that are truncated, corrupted or do not match their manifest."""


class StoreWriteError(StoreError):
    """The store's files could not be written (a full disk, a read-only directory); what was
    committed before stays intact and readable."""


class StoreLocked(StoreError):
    """The store's files are held open by another process or client."""


class AliasBusy(StoreLocked):
    """Another rebuild of the alias is running (the message names its pid, host and start),
    or this rebuild's lease was taken over after it stalled past its expiry."""


class GenerationChanged(StoreError):
    """A swap was asked to install a generation that is not the one its caller validated."""
