"""FishChat: a cloud-native instant-messaging platform, successor of FishChatServer2."""

__version__ = "0.1.0"
