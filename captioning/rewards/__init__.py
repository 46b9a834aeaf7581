"""Self-critical rewards: CIDEr-D, BLEU-4, CLIP-S / RefCLIP-S, grammar; baselines (docs/ORIGINAL.md §4.4-4.5)."""
from captioning.rewards.baselines import greedy_baseline, leave_one_out_baseline
from captioning.rewards.cider_reward import CiderReward, bleu4_reward, cider_df_path, reference_strings
from captioning.rewards.clip_reward import eval_clip_source, reward_clip_source
from captioning.rewards.self_critical import (
    RewardOutput,
    RewardTerm,
    SelfCriticalReward,
    build_self_critical_reward,
    reward_terms,
)

__all__ = [
    "CiderReward",
    "RewardOutput",
    "RewardTerm",
    "SelfCriticalReward",
    "bleu4_reward",
    "build_self_critical_reward",
    "cider_df_path",
    "eval_clip_source",
    "greedy_baseline",
    "leave_one_out_baseline",
    "reference_strings",
    "reward_clip_source",
    "reward_terms",
]
