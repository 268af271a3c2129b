"""The one error the rules package raises.

A rules document is operator input, so a :class:`RulesError` says where the problem is
(``path``, e.g. ``rules[3].when.all[1].events.within``), what is wrong and what is allowed,
with a stable machine-readable ``code``. It hangs directly under
:class:`protocol.errors.ProximaError` (the whole tree is drawn there), with status 400; its
``path`` is the root's ``field``, but its error object names it ``path``::

    ProximaError         (protocol.errors)
    └── RulesError       400

Its codes:

=================  ==============================================================
code               meaning
=================  ==============================================================
too_large          the document exceeds the size limit
bad_encoding       the document is not UTF-8 text
bad_syntax         the document is not well-formed JSON or YAML
yaml_alias         the YAML document uses an alias (``*name``)
duplicate_key      a mapping repeats a key
too_deep           the document nests deeper than allowed
bad_type           a value has the wrong type (e.g. a number where text belongs)
bad_value          a value has the right type but is not allowed
missing_key        a required key is absent
unknown_key        a key is not part of the language
conflicting_keys   keys that exclude each other appear together
too_many           a list or the document holds more entries than allowed
duplicate_id       two rules share an id
bad_duration       a duration is not like ``30s``, ``10m``, ``2h`` or ``1h30m``
bad_time           a time of day is not ``HH:MM``
unknown_timezone   a time zone is not in the IANA database
unbound_item       an action uses ``$item`` but the rule's condition binds no item
=================  ==============================================================
"""

from __future__ import annotations

from protocol.errors import ProximaError


class RulesError(ProximaError):
    """Root of every error raised by :mod:`edge_node.rules`."""

    code = "bad_rules"
    status = 400

    def __init__(self, message: str, *, code: str, path: str = "") -> None:
        super().__init__(message, code=code, field=path or None)
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message

    def to_dict(self) -> dict[str, str]:
        error = {"code": self.code, "message": self.message}
        if self.path:
            error["path"] = self.path
        return error
