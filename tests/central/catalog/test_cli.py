"""``proxima catalog import|show|set`` against a real nats-server."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from central.cli import main
from tests.servers import NatsServer


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["catalog", *args])
    return result.exit_code, result.stdout, result.stderr


def test_import_csv_then_show_and_set(nats_server: NatsServer, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        "id,title,category,price,stock,available,attr.size\n"
        "sku-1,Shoe,shoes,49.5,3,true,42\n"
        "sku-2,Hat,hats,12,,false,\n"
    )
    code, out, err = run("import", "--nats", nats_server.url, str(path))
    assert code == 0, err
    assert "2 created" in out
    code, out, _ = run("show", "--nats", nats_server.url, "sku-1")
    shown = json.loads(out)
    assert (shown["price"], shown["stock"], shown["attributes"]) == (49.5, 3, {"size": 42})
    code, out, err = run("set", "--nats", nats_server.url, "sku-1", "stock=0", "attr.colour=red")
    assert code == 0, err
    assert json.loads(out)["status"] == "updated"
    shown = json.loads(run("show", "--nats", nats_server.url, "sku-1")[1])
    assert shown["stock"] == 0 and shown["attributes"] == {"size": 42, "colour": "red"}
    assert shown["version"] == 2


def test_bad_rows_are_reported_by_line_and_nothing_is_imported(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "ok"}\n{"id": "neg", "price": -1}\n\n{"id": "x", "colour": 1}\n')
    code, _, err = run("import", "--nats", nats_server.url, str(path))
    assert code == 1
    assert "items.jsonl:line 2:" in err and "[negative_price]" in err
    assert "line 4:" in err and "[unknown_field]" in err
    code, _, err = run("show", "--nats", nats_server.url, "ok")
    assert code == 1 and "item_not_found" in err
    code, out, err = run("import", "--nats", nats_server.url, "--skip-bad", str(path))
    assert code == 0 and "1 created" in out
