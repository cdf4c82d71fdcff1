"""The "Train on a Dask cluster" panel: the scheduler's address, the TLS files, news of the remote round, "Run here".

Its fields come from :class:`~napari_sparseseg.core.base.config.RemoteConfig` (tooltips from the
fields' help; the timeouts keep their defaults, or those of the last :meth:`RemotePanel.set_config`).
The dock widget runs the rounds (:mod:`napari_sparseseg.remote`); this panel only shows and asks.
"""

from __future__ import annotations

import dataclasses

from qtpy.QtCore import Signal
from qtpy.QtWidgets import QCheckBox, QFormLayout, QGroupBox, QLabel, QLineEdit, QPushButton, QWidget

from napari_sparseseg.core.base.config import RemoteConfig, field_info

__all__ = ["RemotePanel"]

_ROWS = (("scheduler", "Scheduler", "tls://gpu-server:8786"), ("tls_ca", "CA certificate", "ca.pem"),
         ("tls_cert", "Certificate", "client-cert.pem"), ("tls_key", "Key", "client-key.pem"))


class RemotePanel(QGroupBox):
    """A checkbox to train on a cluster, its address and TLS files, a news line and the "Run here" button.

    Signals:
        note(str): news of a remote round (shown in :attr:`info`); safe to emit from the round's thread.
        run_here_requested(): the user asked to run the round that failed remotely on this computer.
    """

    note = Signal(str)
    run_here_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Remote training", parent)
        self._base = RemoteConfig()
        self.enabled = QCheckBox("Train on a Dask cluster (a GPU server)")
        self.enabled.setToolTip("Each round (training, prediction, suggestions) runs on a worker of the Dask scheduler "
                                "below, on its GPU when it has one; the scan is sent once. Off: on this computer.")
        form = QFormLayout(self)
        form.addRow(self.enabled)
        self.fields: dict[str, QLineEdit] = {}
        for name, label, example in _ROWS:
            edit = QLineEdit()
            edit.setPlaceholderText(example)
            help_text = field_info(RemoteConfig, name).metadata.get("help", "")
            edit.setToolTip(help_text[:1].upper() + help_text[1:] + ".")
            self.fields[name] = edit
            form.addRow(label, edit)
        self.info = QLabel("")
        self.info.setWordWrap(True)
        form.addRow(self.info)
        self.run_here = QPushButton("Run this round on this computer")
        self.run_here.setToolTip("The remote round failed: switch remote training off and run the round here (strokes "
                                 "and model are kept).")
        self.run_here.setVisible(False)
        form.addRow(self.run_here)
        self.note.connect(self.info.setText)
        self.run_here.clicked.connect(lambda _=False: self.run_here_requested.emit())
        self.enabled.toggled.connect(self._enable_fields)
        self._enable_fields(False)

    @property
    def scheduler(self) -> QLineEdit:
        """The address field."""
        return self.fields["scheduler"]

    def _enable_fields(self, on: bool) -> None:
        for edit in self.fields.values():
            edit.setEnabled(bool(on))

    def config(self) -> RemoteConfig | None:
        """The cluster to train on, or ``None`` when remote training is off (raises ``ConfigError`` for a bad value)."""
        if not self.enabled.isChecked():
            return None
        return dataclasses.replace(self._base, **{name: edit.text() or None for name, edit in self.fields.items()})

    def set_config(self, cfg: RemoteConfig | None, enabled: bool | None = None) -> None:
        """Show ``cfg`` (its timeouts are kept for :meth:`config`); ``enabled`` ticks or unticks the box."""
        self._base = cfg or RemoteConfig()
        for name, edit in self.fields.items():
            edit.setText(getattr(self._base, name) or "")
        if enabled is not None:
            self.enabled.setChecked(bool(enabled))

    def offer_local(self, show: bool) -> None:
        """Show (after a failed remote round) or hide the "Run this round on this computer" button."""
        self.run_here.setVisible(bool(show))

    def set_running(self, running: bool) -> None:
        """While a round runs the cluster is fixed."""
        self.enabled.setEnabled(not running)
        self._enable_fields(self.enabled.isChecked() and not running)
