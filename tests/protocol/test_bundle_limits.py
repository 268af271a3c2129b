"""Bundle archives refused from their directory's end record, before zipfile parses them."""

from __future__ import annotations

import struct
import tracemalloc
import zipfile
from io import BytesIO

import pytest

from protocol.bundle import MAX_MEMBERS, inspect_bundle, read_bundle
from protocol.errors import BundleError
from tests.protocol.test_bundle import BUNDLE, TRUSTED_KEY, build, members_of, patch_central_entry

LOCAL = struct.Struct("<4s5H3L2H")
CENTRAL = struct.Struct("<4s6H3L5H2L")


def many_member_zip(count: int, *, zip64: bool = True, claimed: int | None = None) -> bytes:
    """``count`` empty stored members, written by hand (zipfile takes minutes for 200k)."""
    local, central = BytesIO(), BytesIO()
    for n in range(count):
        name = f"parts/m{n}".encode()
        offset = local.tell()
        local.write(LOCAL.pack(b"PK\x03\x04", 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0) + name)
        central.write(
            CENTRAL.pack(b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, len(name), 0, 0, 0, 0, 0,
                         offset) + name
        )  # fmt: skip
    directory = central.getvalue()
    start = local.tell()
    entries = count if claimed is None else claimed
    tail = b""
    if zip64:
        record = start + len(directory)
        tail += struct.pack(
            "<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, entries, entries, len(directory), start
        )
        tail += struct.pack("<4sLQL", b"PK\x06\x07", 0, record, 1)
        tail += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF,
                            0xFFFFFFFF, 0)  # fmt: skip
    else:
        tail += struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, entries & 0xFFFF,
                            entries & 0xFFFF, len(directory), start, 0)  # fmt: skip
    return local.getvalue() + directory + tail


def peak_while(call: object) -> tuple[int, BundleError]:
    tracemalloc.start()
    try:
        with pytest.raises(BundleError) as caught:
            call()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1], caught.value
    finally:
        tracemalloc.stop()


def test_the_handmade_archive_is_a_real_zip() -> None:
    with zipfile.ZipFile(BytesIO(many_member_zip(70_000))) as archive:
        assert len(archive.infolist()) == 70_000  # so the refusals below are not of garbage


def test_a_zip_of_200k_members_is_refused_in_bounded_memory() -> None:
    data = many_member_zip(200_000)
    assert len(data) > 15 << 20
    for call in (lambda: read_bundle(data, TRUSTED_KEY), lambda: inspect_bundle(data)):
        peak, error = peak_while(call)
        assert error.code == "too_many_members"
        assert "200000 members" in error.message
        # zipfile alone would build 200k ZipInfo objects: several times the file's size
        assert peak < len(data) / 100


def test_an_end_record_that_understates_the_members_is_caught_by_the_directory_size() -> None:
    data = many_member_zip(50_000, zip64=False, claimed=5)
    peak, error = peak_while(lambda: read_bundle(data, TRUSTED_KEY))
    assert error.code == "directory_too_large"
    assert peak < len(data) / 10


def test_one_member_over_the_limit_is_refused() -> None:
    with pytest.raises(BundleError) as caught:
        read_bundle(many_member_zip(MAX_MEMBERS + 1, zip64=False), TRUSTED_KEY)
    assert caught.value.code == "too_many_members"


def test_a_member_declaring_more_than_the_limit_is_refused_before_unpacking() -> None:
    big = build(parts={**_parts(), "tables/zeros.npy": bytes(9 << 20)})  # deflates to ~9 KiB
    assert len(big) < 100_000
    with pytest.raises(BundleError) as caught:
        read_bundle(big, TRUSTED_KEY, max_bytes=1 << 20)
    assert caught.value.code == "member_too_large"


def test_members_adding_up_to_more_than_the_limit_are_refused() -> None:
    parts = {**_parts(), **{f"tables/z{n}.npy": bytes(2 << 20) for n in range(5)}}
    with pytest.raises(BundleError) as caught:
        read_bundle(build(parts=parts), TRUSTED_KEY, max_bytes=1 << 20)
    assert caught.value.code == "bundle_unpacks_too_large"


def test_a_lying_member_size_in_the_directory_is_caught() -> None:
    lying = patch_central_entry(BUNDLE, "manifest.json", 24, "<L", 0x7FFFFFFF)
    with pytest.raises(BundleError) as caught:
        read_bundle(lying, TRUSTED_KEY, max_bytes=1 << 20)
    assert caught.value.code == "member_too_large"


def _parts() -> dict[str, bytes]:
    return {
        name[len("parts/") :]: data
        for name, data in members_of(BUNDLE).items()
        if name.startswith("parts/")
    }
