"""The model manager the server builds from its settings (repository source, defaults)."""

from __future__ import annotations

from app.models.loader import ServerDefaults
from app.models.manager import ModelManager
from app.repository.object_store import BucketSource
from app.repository.source import RepositorySource
from app.repository.view import RepositoryView
from app.settings import Settings


def build_manager(settings: Settings) -> ModelManager:
    """The model manager for `settings.repository`, with the configured session options."""
    devices = settings.devices
    defaults = ServerDefaults(devices.instances, devices.intra_op_threads,
                              devices.inter_op_threads, devices.strict_providers,
                              settings.batching.default_max_queue_size,
                              devices.intra_op_spinning,
                              global_thread_pool=devices.global_thread_pool,
                              cache_dir=settings.repository.cache_dir,
                              latency_quantiles=settings.metrics.latency_quantiles,
                              auto_complete=settings.repository.auto_complete_config
                              and not settings.repository.strict_model_config,
                              config_required=settings.repository.strict_model_config,
                              onnxruntime_extensions=settings.repository.onnxruntime_extensions,
                              inline_run_max_us=devices.inline_run_max_us)
    repository = settings.repository
    source: RepositorySource = (
        BucketSource(repository.url, repository.path,
                     config_name=repository.model_config_name) if repository.url
        else RepositoryView(repository.path, repository.layout, repository.model_config_name))
    return ModelManager(
        source, defaults,
        settings.batching.default_max_batch_size,
        strict_readiness=settings.repository.strict_readiness,
        load_threads=settings.repository.load_threads,
    )
