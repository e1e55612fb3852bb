import pytest

from trl_sdar.envs import make_env
from trl_sdar.envs.subprocess_env import EnvProcessError, SubprocessEnv


def test_subprocess_env_plays_like_the_in_process_env():
    local, remote = make_env("search_qa"), make_env("search_qa", subprocess=True)
    try:
        assert isinstance(remote, SubprocessEnv)
        assert (remote.name, remote.max_turns, remote.action_tag) == ("search_qa", 4, "search_qa")
        assert remote.task(3) == local.task(3)
        assert remote.reset(3) == local.reset(3)
        for _ in range(4):
            action = remote.expert_action()
            assert action == local.expert_action()
            a, b = remote.step(action), local.step(action)
            assert a == b
            if a.done:
                break
        assert a.won
        shop = make_env("webshop", subprocess=True)
        with pytest.raises(EnvProcessError, match="ValueError"):
            shop.task(10**9)  # errors inside the process surface with their type
        shop.close()
    finally:
        remote.close()
    assert not remote._process.is_alive()
    with pytest.raises(EnvProcessError, match="exited"):
        remote.reset(0)  # a killed process fails loudly, never hangs
