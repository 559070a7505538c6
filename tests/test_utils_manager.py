"""Spec for :mod:`fengine.utils.manager` and :class:`fengine.registry.DefaultScope`."""
import pytest

from fengine.registry import DefaultScope
from fengine.utils import ManagerMixin


class Named(ManagerMixin):
    def __init__(self, name: str = '', size: int = 1):
        super().__init__(name)
        self.size = size


@pytest.fixture(autouse=True)
def _forget_instances():
    yield
    Named._instance_dict.clear()


def test_get_instance_creates_once_and_returns_the_same_object_after():
    first = Named.get_instance('a', size=3)
    assert Named.get_instance('a') is first and first.size == 3
    assert first.instance_name == 'a'
    assert Named.check_instance_created('a') and not Named.check_instance_created('b')


def test_arguments_for_an_existing_instance_are_refused_with_a_warning():
    Named.get_instance('a', size=3)
    with pytest.warns(UserWarning, match=r"'a' exists already.*\['size'\]"):
        assert Named.get_instance('a', size=5).size == 3


def test_the_current_instance_is_the_newest_one():
    Named.get_instance('a')
    Named.get_instance('b')
    assert Named.get_current_instance().instance_name == 'b'


def test_current_instance_before_any_is_an_error_that_says_what_to_call():
    with pytest.raises(RuntimeError, match=r'Named.get_instance\(name'):
        Named.get_current_instance()


@pytest.mark.parametrize('name, error', [(3, TypeError), ('', ValueError)])
def test_a_bad_instance_name_is_refused(name, error):
    with pytest.raises(error, match='instance name'):
        Named.get_instance(name)
    with pytest.raises(error, match='instance name'):
        Named(name)


def test_each_managed_class_keeps_its_own_instances():
    class Other(ManagerMixin):
        pass

    Named.get_instance('shared')
    assert not Other.check_instance_created('shared')


def test_a_managed_class_must_take_a_name():
    with pytest.raises(TypeError, match='must take a `name` argument'):
        class NoName(ManagerMixin):  # noqa: F841
            def __init__(self, size):
                super().__init__('fixed')


def test_default_scope_is_none_until_one_is_created_and_can_be_overwritten_for_a_block():
    saved = dict(DefaultScope._instance_dict)
    DefaultScope._instance_dict.clear()
    try:
        assert DefaultScope.get_current_instance() is None
        DefaultScope.get_instance('task', scope_name='mmdet')
        assert DefaultScope.get_current_instance().scope_name == 'mmdet'
        with DefaultScope.overwrite_default_scope('myproj'):
            assert DefaultScope.get_current_instance().scope_name == 'myproj'
        assert DefaultScope.get_current_instance().scope_name == 'mmdet'
        with DefaultScope.overwrite_default_scope(None):
            assert DefaultScope.get_current_instance().scope_name == 'mmdet'
        with pytest.raises(TypeError, match='scope_name must be a str'):
            DefaultScope.get_instance('bad', scope_name=3)
    finally:
        DefaultScope._instance_dict.clear()
        DefaultScope._instance_dict.update(saved)
