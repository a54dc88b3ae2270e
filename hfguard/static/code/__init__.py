"""hfguard/static/code"""
