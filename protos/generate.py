"""Generate app/protos_gen/ from protos/*.proto (the one way: make protos, and a test)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: each .proto and whether it has a service (then grpc stubs are generated too); a file comes
#: after the files it imports (inference.proto imports model_config.proto, as Triton's does)
PROTOS = {"model_config": False, "inference": True}
PACKAGE = "app/protos_gen"
DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
PRIVATE_POOL = (
    "# A private pool: tritonclient registers the same `inference.*` names in the default\n"
    "# pool, and both must be importable in one process.\n"
    "POOL = _descriptor_pool.DescriptorPool()\n"
    "DESCRIPTOR = POOL.AddSerializedFile("
)
#: inference.proto's pool is model_config's: an imported file must be in the importer's pool
SHARED_POOL = (
    "# model_config_pb2's private pool, which holds the ModelConfig messages this file uses.\n"
    "POOL = app_dot_protos__gen_dot_model__config__pb2.POOL\n"
    "DESCRIPTOR = POOL.AddSerializedFile("
)


def generate(out: Path) -> None:
    """Write <out>/app/protos_gen/<name>_pb2{.py,.pyi} (and _pb2_grpc.py for services)."""
    for name, has_service in PROTOS.items():
        proto = REPO / "protos" / f"{name}.proto"
        grpc_out = [f"--grpc_python_out={out}"] if has_service else []
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{PACKAGE}={proto.parent}",
             f"--python_out={out}", f"--pyi_out={out}", *grpc_out, str(proto)],
            check=True,
        )
        module = out / PACKAGE / f"{name}_pb2.py"
        text = module.read_text()
        if DEFAULT_POOL not in text:
            raise SystemExit(f"{module}: protoc's output changed shape; update protos/generate.py")
        imports = "app_dot_protos__gen_dot_model__config__pb2" in text
        module.write_text(text.replace(DEFAULT_POOL, SHARED_POOL if imports else PRIVATE_POOL))


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO)
