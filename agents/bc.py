"""Warm start by imitation of the exact optimizer (behaviour cloning), before PPO.

QuantSplit-v0 episodes are one step and the request does not depend on past actions, so
imitating the optimum on a pool of requests is plain supervised learning with no compounding
error (a contextual bandit with the best arm known). The loss is the cross-entropy of each
MultiDiscrete head against the optimal action, counting only the heads the plan uses: the
cut always, the activation bits when 0 < cut < L, the weight bits of units 1..cut (the env
ignores the rest, so their labels would be noise).

Only the actor (features, policy MLP, action head) is trained here; PPO then fine-tunes
actor and critic together. Works for SB3 ``ActorCriticPolicy`` and sb3-contrib's maskable one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn


def policy_logits(policy: nn.Module, obs: torch.Tensor) -> torch.Tensor:
    """Concatenated logits of all MultiDiscrete heads, (N, sum(nvec))."""
    features = policy.extract_features(obs, policy.pi_features_extractor)
    return policy.action_net(policy.mlp_extractor.forward_actor(features))


def used_heads(actions: np.ndarray, n_units: int) -> np.ndarray:
    """(N, L+2) float mask of the heads a plan uses (see the module docstring)."""
    cuts = actions[:, 0]
    m = np.ones(actions.shape, dtype=np.float32)
    m[:, 1] = (cuts > 0) & (cuts < n_units)
    m[:, 2:] = np.arange(n_units)[None, :] < cuts[:, None]
    return m


def imitation_loss(logits: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor,
                   n_units: int, n_bits: int) -> torch.Tensor:
    """Mean over the batch of the summed cross-entropies of the used heads."""
    L, K = n_units, n_bits
    ce = nn.functional.cross_entropy
    cut = ce(logits[:, :L + 1], actions[:, 0], reduction="none")
    act = ce(logits[:, L + 1:L + 1 + K], actions[:, 1], reduction="none")
    w = ce(logits[:, L + 1 + K:].reshape(-1, K), actions[:, 2:].reshape(-1),
           reduction="none").reshape(-1, L)
    total = cut * mask[:, 0] + act * mask[:, 1] + (w * mask[:, 2:]).sum(dim=1)
    return total.mean()


def behaviour_clone(policy: nn.Module, obs: np.ndarray, actions: np.ndarray, n_units: int,
                    n_bits: int, *, epochs: int, batch_size: int = 256, lr: float = 1e-3,
                    seed: int = 0,
                    log: Callable[[int, float], None] | None = None) -> list[float]:
    """Fit the actor of ``policy`` to ``actions`` (optimal actions for ``obs``); epoch losses.

    Adam with a cosine-decayed learning rate; the batch order comes from ``seed`` alone.
    """
    device = next(policy.parameters()).device
    X = torch.as_tensor(obs, dtype=torch.float32, device=device)
    Y = torch.as_tensor(actions, dtype=torch.int64, device=device)
    M = torch.as_tensor(used_heads(actions, n_units), device=device)
    params = [*policy.features_extractor.parameters(),
              *policy.mlp_extractor.policy_net.parameters(), *policy.action_net.parameters()]
    if getattr(policy, "share_features_extractor", True) is False:
        params += list(policy.pi_features_extractor.parameters())
    params = list({id(p): p for p in params}.values())
    opt = torch.optim.Adam(params, lr=lr)
    n = len(X)
    steps = max(1, epochs * ((n + batch_size - 1) // batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(int(seed))
    losses = []
    policy.train()
    for ep in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = imitation_loss(policy_logits(policy, X[idx]), Y[idx], M[idx], n_units, n_bits)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / n)
        if log is not None:
            log(ep, losses[-1])
    policy.set_training_mode(False)
    return losses
