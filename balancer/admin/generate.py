"""Regenerates the Python code of the repository's `.proto` files: `make protos`.

protoc runs with the repository root as include path, so the generated modules
import each other by package path (`balancer.admin.v1.admin_pb2`).
The generated files are checked in; a test regenerates them into a temporary
directory and compares, so a `.proto` edit without `make protos` fails CI.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
PROTOS = ("balancer/admin/v1/admin.proto", "demo/v1/workload.proto")
SUFFIXES = ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi")


def generated_files(proto: str) -> list[str]:
    """The files protoc writes for `proto`, relative to the output directory."""
    stem = proto.removesuffix(".proto")
    return [stem + suffix for suffix in SUFFIXES]


def generate(out_dir: Path) -> list[Path]:
    """Writes the generated code under `out_dir` (mirroring the repository) and returns it.

    Raises RuntimeError with protoc's exit status when protoc fails (it prints why).
    """
    well_known = resources.files("grpc_tools") / "_proto"
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"--proto_path={ROOT}",
            f"--proto_path={well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--pyi_out={out_dir}",
            *(str(ROOT / proto) for proto in PROTOS),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with exit status {status}")
    return [out_dir / name for proto in PROTOS for name in generated_files(proto)]


def main() -> int:
    for path in generate(ROOT):
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
