import os
from pathlib import Path

import pytest
import torch

# Status lines ("pycgn: exporting ...") are for people at a terminal; tests that check them unset this.
os.environ.setdefault("PYCGN_QUIET", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "cgn_mnist_official"
VARIANTS = ("colored_mnist", "double_colored_mnist", "wildlife_mnist")


def published(variant: str) -> Path:
    """Path of a published checkpoint; skips the test where ../shared is absent (a user's machine)."""
    p = SHARED / f"{variant}.pth"
    if not p.is_file():
        pytest.skip(f"published checkpoint {p} is absent (../shared is only on pycgn developer and CI machines)")
    return p


def random_mnist(seed: int = 1234, **sizes):
    """An MnistCGN (``sizes``: its ngf, image_size...) with random, non-trivial weights and running
    statistics (eval mode)."""
    from pycgn.models import MnistCGN
    g = torch.Generator().manual_seed(seed)
    m = MnistCGN(**sizes)
    with torch.no_grad():
        for name, t in m.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if name.endswith("running_var")
                        else torch.randn(t.shape, generator=g) * 0.2)
    return m.eval()


def _cuda_param():
    if not torch.cuda.is_available():
        return pytest.param("cuda", marks=pytest.mark.skip(reason="no CUDA device"))
    return "cuda"


DEVICES = ("cpu", _cuda_param())


@pytest.fixture(params=DEVICES)
def device(request):
    """Every test that takes `device` runs on the CPU and on CUDA (skipped, saying so, without
    a GPU): the same assertions on each device, as in torchvision's ops tests."""
    return torch.device(request.param)


@pytest.fixture
def random_model():
    return random_mnist(1234)


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
    # exported-model caches of the runtime never touch the user's home in tests
    monkeypatch.setenv("PYCGN_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "pycgn-cache"))
    yield


def pytest_report_header(config):
    import pycgn
    return f"pycgn {pycgn.__version__}, extension loaded: {pycgn._ext.AVAILABLE}, torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}"


# Tests that take more than ~2 s each on a quiet 2-core machine (a subprocess that loads torch, an export, a browser, a Ray
# cluster, a fuzz loop): marked slow here, in one list, so the README's quick command
# (`-m "not slow"`) stays under 3 minutes there. .ci/run runs them all.
SLOW = {
    "test_aoti.py::test_aoti_bfloat16_runner",
    "test_aoti.py::test_aoti_export_matches_eager",
    "test_aoti.py::test_aoti_export_of_a_tiny_imagenet_cgn",
    "test_aoti.py::test_aoti_export_of_a_periodic_background_net",
    "test_aoti.py::test_aoti_refuses_damaged_packages",
    "test_aoti.py::test_aoti_runner_loads_the_cached_packages",
    "test_api.py::test_batch_independence",
    "test_api.py::test_generator_threads",
    "test_api.py::test_grid_table",
    "test_api_imagenet.py::test_backend_and_precision_against_eager",
    "test_api_imagenet.py::test_cli_generate",
    "test_api_imagenet.py::test_errors",
    "test_api_imagenet.py::test_exported_backends_against_eager",
    "test_api_imagenet.py::test_generate_with_names_ids_and_truncation",
    "test_api_imagenet.py::test_grid_and_interpolation",
    "test_api_imagenet.py::test_interpolation_and_grid_in_bfloat16",
    "test_api_imagenet.py::test_synth_with_an_imagenet_cgn",
    "test_benchmarks_quick.py::test_allocator_in_use_sees_preloaded_tcmalloc",
    "test_cli.py::test_backend_help_names_every_backend",
    "test_cli.py::test_bad_arguments_exit_2_with_one_line",
    "test_cli.py::test_every_subcommand_reports_errors_in_one_line",
    "test_cli.py::test_generate_writes_grid_png",
    "test_cli.py::test_grid_and_interpolate_and_info",
    "test_cli.py::test_help_for_each_command",
    "test_cli.py::test_status_messages_cache_listing_and_clearing",
    "test_composite.py::test_torch_compile_inductor",
    "test_data.py::test_build_is_deterministic_per_seed",
    "test_data.py::test_shapes_and_range",
    "test_data.py::test_split_is_fixed_and_shuffled",
    "test_design.py::test_benchmark_bytes_do_not_depend_on_batch_size_or_workers",
    "test_design.py::test_cli_makes_and_evaluates_a_benchmark",
    "test_design.py::test_datasheet_reports_requested_and_measured_agreement",
    "test_design.py::test_group_evaluation_scores_every_split_and_group",
    "test_design.py::test_imagenet_cgn_on_a_class_subset",
    "test_evaluate.py::test_cli_writes_json_and_markdown",
    "test_evaluate.py::test_cnn_learns_an_easy_case",
    "test_evaluate.py::test_counterfactuals_shapes_and_determinism",
    "test_evaluate.py::test_tiny_invariance_pipeline",
    "test_evaluate.py::test_invariance_tests_and_per_class",
    "test_evaluate.py::test_cli_tests_option",
    "test_evaluate.py::test_shipped_latents_reach_the_bar_and_a_collapsed_one_fails",
    "test_evaluate.py::test_diversity_result_and_cli",
    "test_explore.py::test_page_in_a_browser",
    "test_export.py::test_cli_export_errors",
    "test_export.py::test_cli_export_writes_and_reports",
    "test_export.py::test_torchscript_loads_in_a_fresh_process",
    "test_fallback.py::test_import_without_extension_warns_once_and_generates",
    "test_hostile.py::test_generate_runs_in_bounded_batches",
    "test_hostile.py::test_huge_and_odd_numbers",
    "test_hostile.py::test_jpeg_name_gets_jpeg_bytes_and_unknown_types_are_refused",
    "test_hostile.py::test_sheets_run_in_bounded_batches",
    "test_hostile.py::test_writable_file_is_replaced_with_the_usual_mode",
    "test_hostile_files.py::test_corrupt_cache_entry_is_exported_again",
    "test_hostile_files.py::test_fuzz_checkpoint_bytes",
    "test_hostile_files.py::test_fuzz_checkpoint_meta",
    "test_hostile_files.py::test_fuzz_imagenet_state_dict",
    "test_hostile_files.py::test_fuzz_sidecar",
    "test_imagenet.py::test_load_errors_are_clear",
    "test_imagenet.py::test_load_published_layout_from_base_files_and_dataparallel",
    "test_imagenet.py::test_mechanism_modules_match_methods",
    "test_imagenet.py::test_onnx_export_parity",
    "test_imagenet.py::test_strict_load_roundtrip",
    "test_imagenet.py::test_torchscript_export_parity",
    "test_readme.py::test_command_line_examples_run_as_written",
    "test_readme.py::test_python_examples_run_as_written",
    "test_runtime.py::test_backend_and_precision_against_eager",
    "test_runtime.py::test_cache_exports_once_then_loads",
    "test_runtime.py::test_sidecar_nets_field_old_and_foreign",
    "test_runtime.py::test_class_vectors_on_torch_blend_the_embeddings",
    "test_runtime.py::test_concurrent_processes_share_one_cache_entry",
    "test_runtime.py::test_corrupt_cache_entry_is_exported_again",
    "test_runtime.py::test_export_dir_from_other_weights_is_refused",
    "test_runtime.py::test_published_model_on_torchscript",
    "test_runtime.py::test_torch_runner_does_not_page_fault_per_call",
    "test_synth.py::test_auto_backend_is_pinned_for_the_whole_dataset",
    "test_synth.py::test_disk_full_leaves_nothing_corrupt_and_resumes",
    "test_synth.py::test_format_round_trips_through_reader",
    "test_synth.py::test_manifest_records_shards_and_identity",
    "test_synth.py::test_npz_holds_inputs_that_regenerate",
    "test_synth.py::test_published_checkpoint",
    "test_synth.py::test_ray_engine_equals_local",
    "test_synth.py::test_resume_after_sigkill_gives_the_uninterrupted_dataset",
    "test_synth.py::test_same_bytes_whatever_batch_size_and_workers",
    "test_synth.py::test_shard_regenerated_alone_equals_full_run",
    "test_synth_hostile.py::test_ray_cluster_that_cannot_finish_is_a_clear_error",
    "test_synth_hostile.py::test_ray_shards_of_a_dead_worker_are_made_by_the_others",
    "test_synth_hostile.py::test_unrecorded_shard_with_changed_labels_is_not_kept",
    "test_train.py::test_train_writes_loadable_checkpoint_and_resumes",
}


def pytest_collection_modifyitems(config, items):
    seen = set()
    for item in items:
        key = f"{Path(item.fspath).name}::{item.originalname}"
        if key in SLOW:
            item.add_marker(pytest.mark.slow)
            seen.add(key)
    if not config.getoption("-k") and not config.args[1:] and len(items) > 100:
        stale = SLOW - seen  # a renamed test would silently leave the quick run
        assert not stale, f"tests/conftest.py SLOW names tests that do not exist: {sorted(stale)}"
