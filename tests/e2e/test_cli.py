"""The command line as an operator meets it: bad configs, new grants, the stdio grant check."""

import hashlib
import re
import subprocess

from conftest import TOOLGATE, require


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    require(TOOLGATE, "run `cargo build` first")
    return subprocess.run([str(TOOLGATE), *args], capture_output=True, text=True, timeout=30, cwd=cwd)


def test_a_bad_config_exits_2_naming_the_key_and_line(tmp_path):
    config = tmp_path / "toolgate.toml"
    config.write_text('[listen]\nmcp = "127.0.0.1:0"\n\n[servers.docs]\nurl = "http://127.0.0.1:9/mcp"\ncommnad = "x"\n')
    for command in (["check"], ["serve"]):
        result = run(*command, "--config", str(config))
        assert result.returncode == 2, result
        assert "commnad" in result.stderr and "line 6" in result.stderr, result.stderr
        assert result.stdout == ""


def test_a_server_with_both_command_and_url_is_refused_with_its_table_line(tmp_path):
    config = tmp_path / "toolgate.toml"
    config.write_text('\n\n[servers.both]\ncommand = "x"\nurl = "http://127.0.0.1:9/mcp"\n')
    result = run("check", "--config", str(config))
    assert result.returncode == 2
    assert "servers.both (line 3)" in result.stderr and "not both" in result.stderr, result.stderr


def test_a_missing_config_file_exits_2(tmp_path):
    result = run("check", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr


def test_grant_new_prints_a_fresh_token_once_with_the_hash_for_the_config(tmp_path):
    first, second = run("grant", "new", "ci-runner"), run("grant", "new", "ci-runner")
    tokens = [re.search(r"^\s+(tg_[0-9a-f]{64})$", r.stdout, re.M).group(1) for r in (first, second)]
    assert tokens[0] != tokens[1]
    digest = re.search(r'token_sha256 = "([0-9a-f]{64})"', first.stdout).group(1)
    assert digest == hashlib.sha256(tokens[0].encode()).hexdigest()
    assert "[grants.ci-runner]" in first.stdout
    # The printed lines are a valid config.
    config = tmp_path / "toolgate.toml"
    config.write_text(first.stdout.split("Add to the configuration:")[1])
    assert run("check", "--config", str(config)).returncode == 0


def test_stdio_refuses_an_unknown_grant_without_writing_to_stdout(tmp_path):
    config = tmp_path / "toolgate.toml"
    config.write_text("")
    result = run("stdio", "--config", str(config), "--grant", "nobody")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "no grant named" in result.stderr
