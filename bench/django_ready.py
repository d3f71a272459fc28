"""Import this first to call the chat's own code in the benchmark's process.

chat.events (the frame encoder) imports the models, so the sections that time the
renderer and the frame builders in process need Django set up before they import
them. Sections that start their own servers do not need it.
"""
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()
