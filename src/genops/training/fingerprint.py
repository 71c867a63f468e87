"""What a checkpoint means: a fingerprint of exactly what decides the trained weights.

    fingerprint = hash(the family's config fields that change training, the training fields of `train`,
                       seed, data hash, base model version, digest of the code training runs)

The code digest is computed statically from the source: starting at the family class's training entry
points (the core's: construction, optimisers, `train_step`, ...; and the `training_methods` of every capability
the family inherits: fit hooks, extra data, phases) it follows every method reached through
`self.` (resolved in the family's own method order, so latent diffusion's MLP denoiser counts and the pixel
U-Net does not), every function, class or constant reached by name in genops modules, and whole network
classes; plus the training loop and batching modules. Each piece is hashed as its syntax tree without
docstrings and type annotations. So a docstring, a model-card sentence, a sampler or an evaluation metric
can change without retraining, while a change to a network retrains exactly the families that build it.
"""

from __future__ import annotations

import ast
import copy
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import genops
from genops.config.families import FAMILIES, FamilyConfig
from genops.config.loading import params_hash
from genops.config.sections import TrainConfig

# Methods of the Family core that run while training (the generic loop, the train stage and checkpointing call
# them); each capability a family inherits adds its own `training_methods` (genops.models.capabilities).
CORE_TRAINING_METHODS = ("__init__", "networks", "make_optimizers", "train_step", "train_mode", "to", "state_dict",
                         "load_state_dict", "labels_of", "device")
CAPABILITIES_MODULE = "genops.models.capabilities"
# Modules that every family's training runs whole: the loop, checkpoints, device/seed set-up, batching.
TRAINING_MODULES = ("genops.training.loop", "genops.training.checkpoint", "genops.training.device",
                    "genops.data.tensors", "genops.models.step", "genops.models.sharding",
                    "genops.training.budget")
FAMILY_BASE = ("genops.models.family", "Family")
CONFIG_PACKAGE = "genops.config"


def training_fingerprint(family: str, cfg: FamilyConfig, train: TrainConfig, seed: int, data_hash: str,
                         base: dict | None = None, src_root: Path | None = None,
                         domains: dict[str, str] | None = None) -> str:
    """`domains`: role -> content hash of the extra data sources the family trains on (CycleGAN's domain B)."""
    return params_hash({"family": family, "cfg": cfg.training_fields(), "train": train.training_fields(),
                        "seed": seed, "data": data_hash, "code": code_digest(family, src_root),
                        **({"base": [base["model"], base["version"], base["fingerprint"]]} if base else {}),
                        **({"domains": dict(sorted(domains.items()))} if domains else {})})


def code_digest(family: str, src_root: Path | None = None) -> str:
    """Digest of the source that training `family` runs (see the module docstring); `src_root` is the folder
    holding the `genops` package (default: the installed one)."""
    return hashlib.sha256("\n".join(code_pieces(family, src_root)).encode()).hexdigest()[:16]


def code_pieces(family: str, src_root: Path | None = None) -> list[str]:
    """`module:name` + normalised syntax tree of every piece of code in the digest, sorted."""
    module, cls = FAMILIES[family].impl.split(":")
    walker = _Walker(_Sources(src_root or Path(genops.__file__).resolve().parent.parent))
    walker.visit_family(module, cls)
    for name in TRAINING_MODULES:
        walker.include(name, "<module>", walker.sources.get(name).tree)
    return sorted(f"{key}\n{dump}" for key, dump in walker.pieces.items())


@dataclass
class _Module:
    name: str
    tree: ast.Module
    defs: dict[str, ast.AST] = field(default_factory=dict)  # top-level name -> def / class / assignment
    imports: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # alias -> (module, attr)

    @classmethod
    def parse(cls, name: str, text: str) -> _Module:
        mod = cls(name, ast.parse(text))
        for node in mod.tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                mod.defs[node.name] = node
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        mod.defs[target.id] = node
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                mod.defs[node.target.id] = node
        for node in ast.walk(mod.tree):  # imports inside functions count too (lazy imports)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genops"):
                for alias in node.names:
                    mod.imports[alias.asname or alias.name] = (node.module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("genops"):
                        mod.imports[alias.asname or alias.name] = (alias.name, None)
        return mod


@functools.lru_cache(maxsize=512)
def _parse(name: str, text: str) -> _Module:
    """Parsed modules by content: digests of several families (or edits) re-use them."""
    return _Module.parse(name, text)


class _Sources:
    def __init__(self, src_root: Path) -> None:
        self.root = src_root
        self._cache: dict[str, _Module | None] = {}

    def get(self, name: str) -> _Module:
        mod = self.find(name)
        if mod is None:
            raise FileNotFoundError(f"module {name} not found under {self.root}")
        return mod

    def find(self, name: str) -> _Module | None:
        if name not in self._cache:
            base = self.root / Path(*name.split("."))
            path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
            self._cache[name] = _parse(name, path.read_text()) if path.is_file() else None
        return self._cache[name]

    def resolve(self, module: str, name: str) -> tuple[str, str] | str | None:
        """Where `name` as seen in `module` is defined: (module, name), a module name, or None (not genops, or
        genops.config, whose values, not code, are in the fingerprint)."""
        if module.startswith(CONFIG_PACKAGE):
            return None
        mod = self.find(module)
        if mod is None:
            return None
        if name in mod.defs:
            return module, name
        if name in mod.imports:
            target, attr = mod.imports[name]
            if target.startswith(CONFIG_PACKAGE):
                return None
            if attr is None:
                return target
            if self.find(f"{target}.{attr}") is not None:
                return f"{target}.{attr}"
            return self.resolve(target, attr) if target != module else None
        return None


class _Walker:
    def __init__(self, sources: _Sources) -> None:
        self.sources = sources
        self.pieces: dict[str, str] = {}
        self._seen: set[tuple] = set()

    # --- what gets included ------------------------------------------------------------------------
    def include(self, module: str, qualname: str, node: ast.AST) -> None:
        self.pieces[f"{module}:{qualname}"] = _dump(node)

    def visit_family(self, module: str, cls: str) -> None:
        """A family class: only its training methods (and what they reach), resolved in its MRO."""
        if ("family", module, cls) in self._seen:
            return
        self._seen.add(("family", module, cls))
        mro = self.mro(module, cls)
        for method in training_methods(mro):
            self.visit_method(mro, method, start=0)

    def visit_method(self, mro: list[tuple[str, ast.ClassDef]], method: str, start: int) -> None:
        """The first definition of `method` in mro[start:], walked with `self` meaning an instance of mro[0]."""
        for i in range(start, len(mro)):
            module, cls = mro[i]
            node = next((n for n in cls.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
                         and n.name == method), None)
            if node is None:
                continue
            key = ("method", mro[0][1].name, module, cls.name, method)
            if key in self._seen:
                return
            self._seen.add(key)
            self.include(module, f"{cls.name}.{method}", node)
            self.walk(module, node, mro, i)
            return

    def visit_name(self, module: str, name: str) -> None:
        where = self.sources.resolve(module, name)
        if isinstance(where, tuple):
            self.visit_def(*where)

    def visit_def(self, module: str, name: str) -> None:
        if ("def", module, name) in self._seen:
            return
        self._seen.add(("def", module, name))
        node = self.sources.get(module).defs[name]
        if isinstance(node, ast.ClassDef) and self.is_family(module, node):
            self.visit_family(module, name)
            return
        self.include(module, name, node)
        self.walk(module, node, None, 0)
        if isinstance(node, ast.ClassDef):  # a network: its genops base classes count whole too
            for base in node.bases:
                if isinstance(base, ast.Name):
                    self.visit_name(module, base.id)

    # --- following references -------------------------------------------------------------------------
    def walk(self, module: str, node: ast.AST, mro: list | None, owner: int) -> None:
        """Follow the genops names `node` uses; with an `mro`, `self.x` and `super().x` are methods too."""
        for child in _code_nodes(node):
            if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
                self.visit_name(module, child.id)
            elif isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name):
                target = self.sources.resolve(module, child.value.id)
                if isinstance(target, str) and self.sources.find(target) is not None:
                    if child.attr in self.sources.get(target).defs:
                        self.visit_def(target, child.attr)
                elif mro is not None and child.value.id == "self":
                    self.visit_method(mro, child.attr, start=0)
            elif (mro is not None and isinstance(child, ast.Attribute) and isinstance(child.value, ast.Call)
                  and isinstance(child.value.func, ast.Name) and child.value.func.id == "super"):
                self.visit_method(mro, child.attr, start=owner + 1)

    def mro(self, module: str, cls: str) -> list[tuple[str, ast.ClassDef]]:
        """The genops classes in `cls`'s method resolution order (depth-first, left to right)."""
        node = self.sources.get(module).defs[cls]
        assert isinstance(node, ast.ClassDef), (module, cls)
        out = [(module, node)]
        for base in node.bases:
            if isinstance(base, ast.Name):
                where = self.sources.resolve(module, base.id)
                if isinstance(where, tuple):
                    out += [c for c in self.mro(*where) if all(c[1] is not o[1] for o in out)]
        return out

    def is_family(self, module: str, cls: ast.ClassDef) -> bool:
        return any((m, c.name) == FAMILY_BASE for m, c in self.mro(module, cls.name))


def training_methods(mro: list[tuple[str, ast.ClassDef]]) -> list[str]:
    """The core's training methods, then each capability's `training_methods` (read from its class body), for the
    capabilities in a family's MRO: what the family declares runs while it trains."""
    out = list(CORE_TRAINING_METHODS)
    for module, cls in mro:
        if module != CAPABILITIES_MODULE:
            continue
        for node in cls.body:
            if isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "training_methods" for t in targets):
                    out += [m for m in ast.literal_eval(node.value) if m not in out]
    return out


def _code_nodes(node: ast.AST):
    """Every node under `node` except docstrings and type annotations (which do not change behaviour)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        for name, value in ast.iter_fields(current):
            if name in ("annotation", "returns"):
                continue
            children = value if isinstance(value, list) else [value]
            stack.extend(c for c in children if isinstance(c, ast.AST))


@functools.lru_cache(maxsize=8192)
def _dump(node: ast.AST) -> str:
    """The normalised tree as text (nodes come from the content-keyed parse cache, so identity is stable)."""
    return ast.dump(_normalised(node), include_attributes=False)


def _normalised(node: ast.AST) -> ast.AST:
    """A copy without docstrings and annotations, so only behaviour reaches the digest."""
    node = copy.deepcopy(node)
    for current in ast.walk(node):
        body = getattr(current, "body", None)
        if (isinstance(current, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            current.body = body[1:] or [ast.Pass()]
        if isinstance(current, ast.arg):
            current.annotation = None
        if isinstance(current, ast.FunctionDef | ast.AsyncFunctionDef):
            current.returns = None
        if isinstance(current, ast.AnnAssign):
            current.annotation = ast.Constant(value=None)
    return node
