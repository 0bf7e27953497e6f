"""Leaderboards: ranking tables, compare, the official plan and submissions."""
