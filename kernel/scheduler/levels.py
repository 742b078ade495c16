"""Attained service as a queue level, the one rule las and plas share: level 0 below first_level tokens, one level up
each time the service is multiplied by growth, capped at levels - 1. Geometric thresholds keep small differences in
service from reordering work while a long program still sinks below a short one."""

from __future__ import annotations


def service_level(service: int, first_level: int, growth: int, levels: int) -> int:
    level, threshold = 0, first_level
    while service >= threshold and level < levels - 1:
        level += 1
        threshold *= growth
    return level
