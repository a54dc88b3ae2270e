"""hfguard/runtime"""
