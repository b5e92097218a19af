"""Forms of the session pages."""

from __future__ import annotations

from django import forms


class NewSessionForm(forms.Form):
    workflow = forms.ChoiceField(choices=())
    title = forms.CharField(max_length=200, required=False, strip=True)

    def __init__(self, *args, workflows: list, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["workflow"].choices = [(w.slug, w.name) for w in workflows]
