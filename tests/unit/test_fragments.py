"""Responses stitched from shared fragments, per-response JSON and filled templates: one valid gzip stream."""

import gzip
import json
import zlib

from homeserver.http.fragments import STEP, Fragment, Hole, Raw, Template, assemble, json_items


def test_a_stitched_response_is_the_json_it_stands_for_in_plain_and_gzip() -> None:
    big = Fragment.of([{"n": n, "text": "é" * (n % 7)} for n in range(3 * STEP // 20)])  # several STEPs long
    small = Fragment.of({"k": "v"})
    body = {"big": big, "raw": Raw(b'{"made":"here"}'), "again": [small, small], "text": "ü"}
    response = assemble(200, body, gzip=True)
    assert response.gzipped is not None
    assert gzip.decompress(response.gzipped) == response.body  # the trailer's CRC and length are checked
    value = json.loads(response.body)
    assert value["raw"] == {"made": "here"} and value["again"] == [{"k": "v"}] * 2 and len(value["big"]) == len(
        json.loads(big.json)
    )


def test_the_crc_of_a_fragment_is_combined_without_reading_it() -> None:
    fragment = Fragment.of(list(range(50_000)))
    for start in (0, 1, 0xDEADBEEF, 0xFFFFFFFF):
        assert fragment.crc_after(start) == zlib.crc32(fragment.json, start)


def test_preparing_a_fragment_a_step_at_a_time_gives_a_valid_stream() -> None:
    fragment = Fragment.of_items([json_items([1, 2]), json_items([]), json_items(["three"])])
    assert json.loads(fragment.json) == [1, 2, "three"]
    steps = sum(1 for _ in fragment.prepare())
    assert steps > 32  # the compression and each of the CRC's 32 images, one step each
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    assert inflate.decompress(fragment.deflated) == fragment.json


def test_a_template_is_filled_per_response() -> None:
    template = Template.of([{"age": Hole(1000), "x": "a\"b"}, {"unsigned": {"age": Hole(400)}}])
    assert json.loads(template.fill(lambda sent: 1500 - sent).json) == [
        {"age": 500, "x": "a\"b"},
        {"unsigned": {"age": 1100}},
    ]
    assert Template.of({"no": "holes"}).fill(lambda _: 0) == Raw(b'{"no":"holes"}')
