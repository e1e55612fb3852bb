import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # multithreaded tiny ops run many times slower under contention on small CPUs


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from trl_sdar.models.tiny import make_tiny_model_dir

    return str(make_tiny_model_dir(tmp_path_factory.mktemp("tiny-qwen2")))
