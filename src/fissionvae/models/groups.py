"""Group bookkeeping shared by every model kind (VAE variants and the FedGAN baseline's DCGAN)."""

from __future__ import annotations


class GroupNamed:
    """Mixin for models that know their client groups by name (``self.group_names``)."""

    group_names: list[str]

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    def group_index(self, group: int | str) -> int:
        """The index of ``group`` (a name or an index), or a ValueError naming the groups."""
        if isinstance(group, str):
            if group not in self.group_names:
                raise ValueError(f"unknown group {group!r}; this model has groups {self.group_names}")
            return self.group_names.index(group)
        if not 0 <= group < self.num_groups:
            raise ValueError(f"group index {group} out of range for {self.num_groups} groups")
        return group
