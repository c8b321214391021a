"""Generate the committed wire documents: JSON Schemas, the topic catalog, AsyncAPI documents.

`python -m contracts.generate` rewrites, under `contracts/`:

- `schemas/<Type>.v<schema_version>.json`: one JSON Schema per registered event type (every
  module of the `contracts` package is imported first, so each registers its events);
- `schemas/topics.json`: the topic catalog, dead-letter twins and buckets;
- `asyncapi/<service>.yaml`: the AsyncAPI document of every service that has an `app.py`,
  built by calling its `create_app(settings)` with fixed placeholder settings (building an app
  connects to nothing), the equivalent of `faststream docs gen --yaml`.

Output is deterministic (sorted keys where order carries no meaning, no timestamps, a trailing
newline), so the files can be committed and checked. `--check` writes nothing and exits 1 with
the list of stale files (changed, missing, or no longer generated); a test runs it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import dataclasses
import importlib
import inspect
import json
import pkgutil
import sys
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import yaml
from pydantic import SecretStr

import contracts
from contracts.envelope import EVENT_TYPES
from contracts.topics import BUCKETS, SERVICES, all_topics
from services.common.settings import ServiceSettings

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import ModuleType

    from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

    from contracts.envelope import Event

CONTRACTS_DIR: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = CONTRACTS_DIR.parent
SCHEMAS_DIR: Final = CONTRACTS_DIR / "schemas"
ASYNCAPI_DIR: Final = CONTRACTS_DIR / "asyncapi"
SERVICES_DIR: Final = REPO_ROOT / "services"
SERVICES_PACKAGE: Final = "services"

JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
DOCS_BOOTSTRAP: Final = "kafka:9092"
"""The Kafka address the AsyncAPI documents show (the real one is deployment configuration)."""
_PLACEHOLDER: Final = "asyncapi-docs"
_SKIP_MODULES: Final = frozenset({"contracts.generate"})


def import_contract_modules() -> list[str]:
    """Import every module of the `contracts` package (so all events register); their names."""
    names: list[str] = []
    for info in pkgutil.walk_packages(contracts.__path__, prefix="contracts."):
        if info.name in _SKIP_MODULES:
            continue
        importlib.import_module(info.name)
        names.append(info.name)
    return sorted(names)


def _dump_json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def event_schema(model: type[Event]) -> dict[str, Any]:
    """The JSON Schema of one event type, with `$schema` and a stable `$id`."""
    version = model.model_fields["schema_version"].default
    schema = model.model_json_schema()
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": f"urn:rekisteri:contracts:{model.__name__}:v{version}",
        **schema,
    }


def contract_event_types() -> dict[str, type[Event]]:
    """The registered event types defined in the `contracts` package, by type name.

    Event subclasses defined elsewhere (a test's throw-away event) register too; they are not
    part of the wire and are left out.
    """
    import_contract_modules()
    return {
        name: EVENT_TYPES[name]
        for name in sorted(EVENT_TYPES)
        if EVENT_TYPES[name].__module__.startswith("contracts.")
    }


def schema_documents() -> dict[Path, str]:
    """`schemas/<Type>.v<N>.json` for every contract event type, plus `schemas/topics.json`."""
    out: dict[Path, str] = {}
    for name, model in contract_event_types().items():
        version = model.model_fields["schema_version"].default
        out[SCHEMAS_DIR / f"{name}.v{version}.json"] = _dump_json(event_schema(model))
    out[SCHEMAS_DIR / "topics.json"] = _dump_json(catalog())
    return out


def catalog() -> dict[str, Any]:
    """The topic catalog as plain JSON data: topics with their Kafka config, and buckets."""
    topics = []
    for t in sorted(all_topics(), key=lambda t: t.name):
        entry = dataclasses.asdict(t)
        entry["cleanup"] = str(t.cleanup)
        entry["producers"] = sorted(t.producers)
        entry["consumers"] = sorted(t.consumers)
        entry["config"] = t.config()
        del entry["extra_config"]
        topics.append(entry)
    buckets = {name: sorted(users) for name, users in BUCKETS.items()}
    return {"services": list(SERVICES), "topics": topics, "buckets": buckets}


def discover_service_apps(root: Path, package: str) -> dict[str, ModuleType]:
    """Import `<package>.<name>.app` for every `<root>/<name>/app.py`, by service name."""
    found: dict[str, ModuleType] = {}
    for app_file in sorted(root.glob("*/app.py")):
        name = app_file.parent.name
        found[name] = importlib.import_module(f"{package}.{name}.app")
    return found


def _settings_class(module: ModuleType) -> type[ServiceSettings]:
    create_app = module.create_app
    params = list(inspect.signature(create_app).parameters)
    try:
        hints = typing.get_type_hints(create_app)
    except NameError:  # an annotation imported only under TYPE_CHECKING
        hints = {}
    hinted = hints.get(params[0]) if params else None
    if isinstance(hinted, type) and issubclass(hinted, ServiceSettings):
        return hinted
    package = module.__name__.rpartition(".")[0]
    settings_module = importlib.import_module(f"{package}.settings")
    classes = [
        value
        for value in vars(settings_module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value.__module__ == settings_module.__name__
    ]
    if len(classes) != 1:
        raise RuntimeError(f"{package}.settings must define exactly one ServiceSettings class")
    return classes[0]


def docs_settings(settings_cls: type[ServiceSettings]) -> ServiceSettings:
    """Placeholder settings for building an app's document, independent of the environment.

    Only the values given here count (no environment variables, no .env file), so the document
    is the same on every machine. Required fields a service adds must be strings or secrets
    (filled with a placeholder) or have defaults.
    """

    class _DocsSettings(settings_cls):  # type: ignore[valid-type,misc]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],  # noqa: ARG003 - the signature pydantic calls
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,  # noqa: ARG003
            dotenv_settings: PydanticBaseSettingsSource,  # noqa: ARG003
            file_secret_settings: PydanticBaseSettingsSource,  # noqa: ARG003
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings,)

    values: dict[str, object] = {
        "environment": "development",
        "kafka_bootstrap_servers": DOCS_BOOTSTRAP,
        "kafka_username": _PLACEHOLDER,
        "kafka_password": _PLACEHOLDER,
        "pg_dsn": f"postgresql://{_PLACEHOLDER}@localhost/{_PLACEHOLDER}",
        "kek": base64.b64encode(bytes(32)).decode(),
    }
    for name, info in settings_cls.model_fields.items():
        if name in values or not info.is_required():
            continue
        if info.annotation not in (str, SecretStr):
            raise RuntimeError(
                f"{settings_cls.__name__}.{name} is required and not a string: give it a "
                "default so the AsyncAPI document can be built"
            )
        values[name] = _PLACEHOLDER
    settings: ServiceSettings = _DocsSettings(**values)
    return settings


def asyncapi_document(module: ModuleType) -> str:
    """The AsyncAPI document (YAML) of the app that `module.create_app(settings)` builds."""
    app = module.create_app(docs_settings(_settings_class(module)))
    if inspect.isawaitable(app):
        app = asyncio.run(_await(app))
    factory = getattr(app, "schema", None)
    if factory is None:
        raise RuntimeError(f"{module.__name__}.create_app() returned an app with no schema")
    document = _sorted_maps(factory.to_specification().to_jsonable())
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


_UNORDERED: Final = frozenset({"channels", "operations", "messages", "schemas"})
"""Maps whose order FastStream takes from sets (it varies with hash seeds): sorted by name."""


def _sorted_maps(node: Any, key: str | None = None) -> Any:  # noqa: ANN401 - JSON-like data
    if isinstance(node, dict):
        items = sorted(node.items()) if key in _UNORDERED else node.items()
        return {k: _sorted_maps(v, k) for k, v in items}
    if isinstance(node, list):
        return [_sorted_maps(v) for v in node]
    return node


async def _await(awaitable: typing.Awaitable[Any]) -> Any:  # noqa: ANN401 - any app type
    return await awaitable


def asyncapi_documents(root: Path, package: str, out_dir: Path) -> dict[Path, str]:
    """`<out_dir>/<service>.yaml` for every service app found under `root` (package `package`)."""
    return {
        out_dir / f"{name}.yaml": asyncapi_document(module)
        for name, module in discover_service_apps(root, package).items()
    }


def expected_files() -> dict[Path, str]:
    """Every generated file and its content."""
    return schema_documents() | asyncapi_documents(SERVICES_DIR, SERVICES_PACKAGE, ASYNCAPI_DIR)


def _generated_now(directory: Path, pattern: str) -> set[Path]:
    return set(directory.glob(pattern)) if directory.is_dir() else set()


def stale_files(expected: dict[Path, str]) -> list[Path]:
    """Files that differ from `expected`, are missing, or are generated files no longer made."""
    stale = {
        path
        for path, text in expected.items()
        if not path.is_file() or path.read_text(encoding="utf-8") != text
    }
    leftovers = _generated_now(SCHEMAS_DIR, "*.json") | _generated_now(ASYNCAPI_DIR, "*.yaml")
    stale |= leftovers - set(expected)
    return sorted(stale)


def write(expected: dict[Path, str]) -> list[Path]:
    """Write the stale files and delete generated files no longer made; the paths touched."""
    touched = stale_files(expected)
    for path in touched:
        if path in expected:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(expected[path], encoding="utf-8")
        else:
            path.unlink()
    return touched


def _show(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def main(argv: Sequence[str] | None = None) -> int:
    """Generate the documents, or with `--check` report the stale ones (exit status 1)."""
    parser = argparse.ArgumentParser(prog="python -m contracts.generate", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 listing stale files"
    )
    args = parser.parse_args(argv)
    expected = expected_files()
    if args.check:
        stale = stale_files(expected)
        if stale:
            sys.stdout.write("stale generated files (run `python -m contracts.generate`):\n")
            sys.stdout.writelines(f"  {_show(p)}\n" for p in stale)
            return 1
        sys.stdout.write(f"{len(expected)} generated files are current\n")
        return 0
    touched = write(expected)
    sys.stdout.writelines(
        f"{'wrote' if p in expected else 'removed'} {_show(p)}\n" for p in touched
    )
    sys.stdout.write(f"{len(expected)} generated files, {len(touched)} updated\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
