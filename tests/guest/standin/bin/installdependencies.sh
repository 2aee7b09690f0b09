#!/usr/bin/env bash
# Stand-in for the runner's bin/installdependencies.sh (30-actions-runner.sh runs it): the stand-in needs
# nothing beyond bash, coreutils, grep and sudo.
echo "runner stand-in: no dependencies to install"
