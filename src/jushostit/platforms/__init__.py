"""Shared data platforms seats live on (Hopsworks)"""
