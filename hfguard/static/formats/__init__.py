"""hfguard/static/formats"""
