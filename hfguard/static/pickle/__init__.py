"""hfguard/static/pickle"""
