"""Errors of the event lake (drawn in the tree of :mod:`protocol.errors`)::

    CentralError
    └── LakeError               400  central.lake: the lake cannot do what was asked
        ├── LakeSchemaError     422  a file is not of this lake schema version (names it)
        ├── LakeCorruptError    422  a file or manifest is torn or unreadable (names it)
        └── LakeNotFoundError   404  the lake root does not exist or holds no lake
"""

from __future__ import annotations

from central.errors import CentralError


class LakeError(CentralError):
    code = "lake_error"
    status = 400


class LakeSchemaError(LakeError):
    code = "lake_schema"
    status = 422


class LakeCorruptError(LakeError):
    code = "lake_corrupt"
    status = 422


class LakeNotFoundError(LakeError):
    code = "lake_not_found"
    status = 404
